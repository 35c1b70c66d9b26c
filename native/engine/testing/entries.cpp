// The engine's test and measurement entries (g2l/testing.h), built as the library g2l_engine_testing that only the
// test module (native/addon/testing.cpp) links: the production addon carries none of this code.
#include <ATen/ATen.h>
#include <c10/util/StringUtil.h>

#include <algorithm>
#include <chrono>
#include <limits>

#include "dist/dist.h"
#include "g2l/testing.h"
#include "kernels/quant.h"
#include "models/model.h"
#include "models/vit.h"
#include "runtime/tensor_bridge.h"
#include "train/optim.h"

namespace g2l {

// ---------------------------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------------------------

HostTensor embed_train(const Model& model, const HostTensor& images, uint64_t seed, const Regularization& drop) {
  std::lock_guard<std::mutex> lock(model.mutex_);
  Model::Impl* impl = model.impl_.get();
  return with_torch_errors([&] {
    if (!impl) throw Error("embed_train: the model has been disposed");
    if (images.dtype != DType::F32 || images.shape.size() != 4 || images.shape[1] != 3) {
      throw Error("embed_train: images must be float32 (N,3,H,W), normalised, got " + c10::str(images.shape));
    }
    auto vit = std::dynamic_pointer_cast<VisionTransformerImpl>(impl->model.module);
    if (!vit) throw Error("internal: the model is not a VisionTransformer");
    const Regularization saved = vit->spec().drop;
    const Regularization& rates = drop;
    at::NoGradGuard no_grad;
    at::Tensor x = view_as_aten(images).to(impl->device).to(impl->dtype);
    vit->set_regularization(rates);
    at::Tensor z;
    try {
      VisionTransformerImpl::DropScope scope(*vit, seed);
      z = impl->model.forward(x);
    } catch (...) {
      vit->set_regularization(saved);
      throw;
    }
    vit->set_regularization(saved);
    return to_host(z.to(at::kFloat).contiguous());
  });
}

// ---------------------------------------------------------------------------------------------------------------
// AdamW and schedules
// ---------------------------------------------------------------------------------------------------------------

OptimizerTrace run_optimizer(const std::vector<std::string>& names, const std::vector<HostTensor>& params,
                             const std::vector<std::vector<HostTensor>>& grads, const OptimizerConfig& config,
                             const std::string& fused_adamw) {
  return with_torch_errors([&] {
    if (names.size() != params.size()) throw Error("run_optimizer: names and params differ in length");
    std::vector<std::pair<std::string, at::Tensor>> named;
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].dtype != DType::F32) throw Error("run_optimizer: parameter '" + names[i] + "' must be float32");
      named.emplace_back(names[i], view_as_aten(params[i]).clone().requires_grad_(true));
    }
    AdamW opt(named, config, fused_adamw);
    OptimizerTrace trace;
    for (size_t s = 0; s < grads.size(); ++s) {
      if (grads[s].size() != params.size()) {
        throw Error("run_optimizer: step " + std::to_string(s) + " has " + std::to_string(grads[s].size()) +
                    " gradients for " + std::to_string(params.size()) + " parameters");
      }
      for (size_t i = 0; i < params.size(); ++i) {
        at::Tensor g = view_as_aten(grads[s][i]).to(at::kFloat);
        if (g.sizes() != named[i].second.sizes()) {
          throw Error("run_optimizer: gradient of '" + names[i] + "' at step " + std::to_string(s) + " has shape " +
                      c10::str(g.sizes()) + ", expected " + c10::str(named[i].second.sizes()));
        }
        named[i].second.mutable_grad() = g.clone();
      }
      trace.schedule.push_back(schedule_at(config, static_cast<int64_t>(s)));
      trace.grad_norm.push_back(opt.step(static_cast<int64_t>(s)).item<double>());
      std::vector<HostTensor> after;
      for (auto& [key, p] : named) after.push_back(to_host(p.detach().clone()));
      trace.params.push_back(std::move(after));
    }
    return trace;
  });
}

// ---------------------------------------------------------------------------------------------------------------
// FP8 products
// ---------------------------------------------------------------------------------------------------------------

Fp8QuantResult fp8_quantize_rows(const HostTensor& x, const std::string& device, const std::string& mode) {
  return with_torch_errors([&] {
    if (x.dtype != DType::F32 || x.shape.size() != 2) throw Error("fp8QuantizeRows: x must be float32 (rows, cols)");
    at::Tensor t = view_as_aten(x).to(parse_device(device)).to(at::kBFloat16);
    Fp8Rows q = quantize_rows_fp8(t, mode);
    Fp8QuantResult r;
    r.codes = to_host(q.codes.view(at::kByte).to(at::kCPU));
    r.scales = to_host(q.scales.view({-1}).to(at::kCPU));
    r.dequantized = to_host(dequantize_rows_fp8(q).to(at::kCPU));
    return r;
  });
}

HostTensor fp8_linear(const HostTensor& x, const HostTensor& weight, const HostTensor& bias, const std::string& device,
                      bool emulate, bool fast_accum) {
  return with_torch_errors([&] {
    for (const HostTensor* t : {&x, &weight, &bias}) {
      if (t->dtype != DType::F32) throw Error("fp8Linear: x, weight and bias must be float32");
    }
    at::Device dev = parse_device(device);
    if (!emulate) {
      const std::string why = fp8_unsupported_reason(dev);
      if (!why.empty())
        throw Error("fp8Linear: " + why +
                    ": _scaled_mm needs a CUDA GPU with FP8 tensor cores (compute capability 8.9+); pass emulate");
    }
    c10::InferenceMode inference;
    auto bf16 = [&](const HostTensor& t) { return view_as_aten(t).to(dev).to(at::kBFloat16); };
    Fp8Options options;
    options.emulate = emulate;
    options.fast_accum = fast_accum;
    Fp8Linear f = Fp8Linear::from_weight(bf16(weight), bf16(bias), options);
    return to_host(f.forward(bf16(x)).to(at::kCPU, at::kFloat).contiguous());
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Rates
// ---------------------------------------------------------------------------------------------------------------

double matmul_rate(int64_t m, int64_t n, int64_t k, const std::string& device, int64_t reps) {
  return with_torch_errors([&] {
    at::NoGradGuard no_grad;
    const at::Device dev = parse_device(device);
    at::Tensor A = at::randn({m, k}, at::TensorOptions().dtype(at::kFloat).device(dev));
    at::Tensor B = at::randn({n, k}, at::TensorOptions().dtype(at::kFloat).device(dev));
    at::Tensor Cm = at::empty({m, n}, A.options());
    at::mm_out(Cm, A, B.t());
    (void)Cm[0][0].item<float>();  // warm-up, and a device sync
    double best = std::numeric_limits<double>::infinity();
    for (int64_t r = 0; r < std::max<int64_t>(1, reps); ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      at::mm_out(Cm, A, B.t());
      (void)Cm[m - 1][n - 1].item<float>();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return static_cast<double>(m) * n * k / best;
  });
}

AllReduceTiming time_all_reduce(DistContext& context, int64_t bytes, int repeats) {
  if (bytes < 4 || repeats < 1) throw Error("time_all_reduce: need bytes >= 4 and repeats >= 1");
  return with_torch_errors([&] {
    at::Tensor flat = at::ones({bytes / 4}, at::TensorOptions().dtype(at::kFloat).device(context.device()));
    auto sync = [&] {
      if (flat.is_cuda()) flat.sum().item<float>();  // the all-reduce is queued on the device: wait for it
    };
    context.all_reduce_sum_({flat});  // warm-up: connects the communicators
    sync();
    std::vector<double> ms;
    for (int i = 0; i < repeats; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      context.all_reduce_sum_({flat});
      sync();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    AllReduceTiming t;
    t.bytes = (bytes / 4) * 4;
    t.median_ms = ms[ms.size() / 2];
    const double n = context.world_size();
    t.bus_gbps = t.median_ms > 0 ? 2.0 * (n - 1.0) / std::max(n, 1.0) * t.bytes / (t.median_ms * 1e6) : 0.0;
    return t;
  });
}

}  // namespace g2l
