// Test entry fused_norm_check (g2l/distill.h): each fused LayerNorm / LayerScale / residual + LayerNorm path of
// fused.h against the unfused at:: ops it replaces, on random inputs, forward and backward.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "fused.h"
#include "g2l/distill.h"
#include "g2l/engine.h"
#include "quant.h"
#include "tensor_bridge.h"

namespace g2l {

namespace {

// ||a - b|| / ||b|| in float64 (0 when both are zero).
double rel(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor a64 = a.to(at::kDouble), b64 = b.to(at::kDouble);
  const double den = b64.norm().item<double>(), num = (a64 - b64).norm().item<double>();
  return den == 0 ? num : num / den;
}

}  // namespace

std::vector<std::pair<std::string, double>> fused_norm_check(const std::string& device, int64_t rows, int64_t d,
                                                             const std::string& dtype, uint64_t seed) {
  return with_torch_errors([&] {
    if (rows < 1 || d < 4 || d % 4 != 0) throw Error("fusedNormCheck: rows >= 1 and d a multiple of 4 (>= 4)");
    at::ScalarType half;
    if (dtype == "bfloat16") {
      half = at::kBFloat16;
    } else if (dtype == "float16") {
      half = at::kHalf;
    } else {
      throw Error("fusedNormCheck: dtype must be \"bfloat16\" or \"float16\", got \"" + dtype + "\"");
    }
    const at::Device dev = parse_device(device);
    const double eps = 1e-6;
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    // Random on the CPU from the seed (the same numbers on every device), then moved.
    auto randn = [&](std::vector<int64_t> shape, double scale, double shift, at::ScalarType t) {
      return (at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)) * scale + shift).to(dev, t).contiguous();
    };
    std::vector<std::pair<std::string, double>> out;

    // 1. The student's LayerNorm with its result in the 16-bit dtype (autocast), backward included.
    {
      at::Tensor x = randn({rows, d}, 2.0, 0.5, at::kFloat), w = randn({d}, 0.2, 1.0, at::kFloat);
      at::Tensor b = randn({d}, 0.1, 0.0, at::kFloat), g = randn({rows, d}, 1.0, 0.0, half);
      at::Tensor x1 = x.clone().requires_grad_(), w1 = w.clone().requires_grad_(), b1 = b.clone().requires_grad_();
      at::Tensor x0 = x.clone().requires_grad_(), w0 = w.clone().requires_grad_(), b0 = b.clone().requires_grad_();
      at::Tensor y1 = detail::layer_norm_cast(x1, w1, b1, eps, half);
      at::Tensor y0 = at::layer_norm(x0, {d}, w0, b0, eps).to(half);
      y1.backward(g);
      y0.backward(g);
      out.emplace_back("layer_norm.y", rel(y1, y0));
      out.emplace_back("layer_norm.dx", rel(x1.grad(), x0.grad()));
      out.emplace_back("layer_norm.dw", rel(w1.grad(), w0.grad()));
      out.emplace_back("layer_norm.db", rel(b1.grad(), b0.grad()));
    }
    // 2. The student's LayerScale residual x + gamma * y with y in the 16-bit dtype.
    {
      at::Tensor x = randn({rows, d}, 1.0, 0.0, at::kFloat), y = randn({rows, d}, 1.0, 0.0, half);
      at::Tensor gamma = randn({d}, 0.3, 0.5, at::kFloat), g = randn({rows, d}, 1.0, 0.0, at::kFloat);
      at::Tensor x1 = x.clone().requires_grad_(), y1 = y.clone().requires_grad_(), c1 = gamma.clone().requires_grad_();
      at::Tensor x0 = x.clone().requires_grad_(), y0 = y.clone().requires_grad_(), c0 = gamma.clone().requires_grad_();
      at::Tensor o1 = detail::layer_scale_add_fused(x1, y1, c1);
      at::Tensor o0 = at::addcmul(x0, y0.to(at::kFloat), c0);
      o1.backward(g);
      o0.backward(g);
      out.emplace_back("layer_scale.out", rel(o1, o0));
      out.emplace_back("layer_scale.dx", rel(x1.grad(), x0.grad()));
      out.emplace_back("layer_scale.dy", rel(y1.grad(), y0.grad()));
      out.emplace_back("layer_scale.dgamma", rel(c1.grad(), c0.grad()));
    }
    // 3. The frozen teacher's residual + LayerNorm in the 16-bit dtype (fused on CUDA only), with and without
    //    LayerScale, and (bfloat16) with FP8 rows for the next products.
    c10::InferenceMode inference;
    for (const bool with_gamma : {true, false}) {
      const std::string name = with_gamma ? "residual_ls" : "residual";
      at::Tensor x = randn({rows, d}, 1.0, 0.0, half), y = randn({rows, d}, 1.0, 0.0, half);
      at::Tensor gamma = with_gamma ? randn({d}, 0.3, 0.5, half) : at::Tensor();
      at::Tensor w = randn({d}, 0.2, 1.0, half), b = randn({d}, 0.1, 0.0, half);
      at::Tensor x0 = x.clone();
      if (with_gamma) x0.addcmul_(y, gamma); else x0.add_(y);
      at::Tensor h0 = at::layer_norm(x0, {d}, w, b, eps);
      at::Tensor x1 = x.clone();
      NormOutput r;
      if (!detail::residual_layer_norm_fused(x1, y, gamma, w, b, eps, /*want_fp8=*/false, r)) continue;
      out.emplace_back(name + ".x", rel(x1, x0));
      out.emplace_back(name + ".h", rel(r.h, h0));
      if (half != at::kBFloat16) continue;
      at::Tensor x2 = x.clone();
      NormOutput q;
      detail::residual_layer_norm_fused(x2, y, gamma, w, b, eps, /*want_fp8=*/true, q);
      const Fp8Rows q0 = quantize_rows_fp8(h0, "aten");
      const at::Tensor differ = q.q.codes.view(at::kByte).ne(q0.codes.view(at::kByte));
      out.emplace_back(name + ".fp8_codes_differing", differ.to(at::kDouble).mean().item<double>());
      out.emplace_back(name + ".fp8_scales",
                       ((q.q.scales - q0.scales).abs() / q0.scales).max().item<double>());
      out.emplace_back(name + ".fp8_x", rel(x2, x0));
    }
    return out;
  });
}

}  // namespace g2l
