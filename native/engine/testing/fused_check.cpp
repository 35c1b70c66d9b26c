// Test entry fused_norm_check (g2l/distill.h): each fused LayerNorm / LayerScale / residual + LayerNorm path of
// fused.h against the unfused at:: ops it replaces, on random inputs, forward and backward.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <array>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "kernels/fused.h"
#include "g2l/distill.h"
#include "g2l/engine.h"
#include "g2l/testing.h"
#include "kernels/quant.h"
#include "runtime/tensor_bridge.h"

namespace g2l {

namespace {

// ||a - b|| / ||b|| in float64 (0 when both are zero).
double rel(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor a64 = a.to(at::kDouble), b64 = b.to(at::kDouble);
  const double den = b64.norm().item<double>(), num = (a64 - b64).norm().item<double>();
  return den == 0 ? num : num / den;
}

using Pairs = std::vector<std::pair<std::string, double>>;
using Op3 = std::function<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>;

// fused and reference on their own leaf copies of the same three inputs, each backward with g: records
// "<name>.<result>" for the results and "<name>.<grads[i]>" for the gradients of input i.
void compare_with_grads(Pairs& out, const std::string& name, const char* result,
                        const std::array<const char*, 3>& grads, const std::array<at::Tensor, 3>& inputs,
                        const at::Tensor& g, const Op3& fused, const Op3& reference) {
  std::array<at::Tensor, 3> a, b;
  for (size_t i = 0; i < 3; ++i) {
    a[i] = inputs[i].clone().requires_grad_();
    b[i] = inputs[i].clone().requires_grad_();
  }
  at::Tensor ya = fused(a[0], a[1], a[2]), yb = reference(b[0], b[1], b[2]);
  ya.backward(g);
  yb.backward(g);
  out.emplace_back(name + "." + result, rel(ya, yb));
  for (size_t i = 0; i < 3; ++i) out.emplace_back(name + "." + grads[i], rel(a[i].grad(), b[i].grad()));
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
    Pairs out;

    // 1. The student's LayerNorm with its result in the 16-bit dtype (autocast), backward included.
    // (Inputs drawn one statement at a time: the generator's order must not depend on argument evaluation order.)
    std::array<at::Tensor, 3> ln_in{randn({rows, d}, 2.0, 0.5, at::kFloat), randn({d}, 0.2, 1.0, at::kFloat),
                                    randn({d}, 0.1, 0.0, at::kFloat)};
    at::Tensor ln_g = randn({rows, d}, 1.0, 0.0, half);
    compare_with_grads(
        out, "layer_norm", "y", {"dx", "dw", "db"}, ln_in, ln_g,
        [&](const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
          return detail::layer_norm_cast(x, w, b, eps, half);
        },
        [&](const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
          return at::layer_norm(x, {d}, w, b, eps).to(half);
        });
    // 2. The student's LayerScale residual x + gamma * y with y in the 16-bit dtype.
    std::array<at::Tensor, 3> ls_in{randn({rows, d}, 1.0, 0.0, at::kFloat), randn({rows, d}, 1.0, 0.0, half),
                                    randn({d}, 0.3, 0.5, at::kFloat)};
    at::Tensor ls_g = randn({rows, d}, 1.0, 0.0, at::kFloat);
    compare_with_grads(
        out, "layer_scale", "out", {"dx", "dy", "dgamma"}, ls_in, ls_g,
        [](const at::Tensor& x, const at::Tensor& y, const at::Tensor& gamma) {
          return detail::layer_scale_add_fused(x, y, gamma);
        },
        [](const at::Tensor& x, const at::Tensor& y, const at::Tensor& gamma) {
          return at::addcmul(x, y.to(at::kFloat), gamma);
        });
    // 3. The frozen teacher's residual + LayerNorm in the 16-bit dtype (fused on CUDA only), with and without
    //    LayerScale, and (bfloat16) with FP8 rows for the next products.
    c10::InferenceMode inference;
    for (const bool with_gamma : {true, false}) {
      const std::string name = with_gamma ? "residual_ls" : "residual";
      at::Tensor x = randn({rows, d}, 1.0, 0.0, half), y = randn({rows, d}, 1.0, 0.0, half);
      at::Tensor gamma = with_gamma ? randn({d}, 0.3, 0.5, half) : at::Tensor();
      at::Tensor w = randn({d}, 0.2, 1.0, half), b = randn({d}, 0.1, 0.0, half);
      at::Tensor x0 = x.clone();
      if (with_gamma)
        x0.addcmul_(y, gamma);
      else
        x0.add_(y);
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
      out.emplace_back(name + ".fp8_scales", ((q.q.scales - q0.scales).abs() / q0.scales).max().item<double>());
      out.emplace_back(name + ".fp8_x", rel(x2, x0));
    }
    return out;
  });
}

}  // namespace g2l
