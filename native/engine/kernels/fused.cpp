// Fused element-wise operations (contract: fused.h; kernels: cuda/swiglu.cu, cuda/norm.cu).
#ifdef G2L_WITH_CUDA
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/cuda/kernels.h"
#endif

#include <torch/torch.h>

#include <algorithm>

#include "kernels/fused.h"

namespace g2l {

namespace {

// Today's expression, bit for bit: the CPU path and the fallback everywhere the kernel does not apply.
at::Tensor swiglu_unfused(const at::Tensor& h) {
  auto halves = h.chunk(2, -1);
  return at::silu(halves[0]) * halves[1];
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

#ifdef G2L_WITH_CUDA
// The kernel's dtype code, or -1 for dtypes it does not cover.
int kernel_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return cuda::kElemF32;
    case at::kHalf:
      return cuda::kElemF16;
    case at::kBFloat16:
      return cuda::kElemBF16;
    default:
      return -1;
  }
}

// h contiguous (..., 2H) on CUDA -> (..., H).
at::Tensor forward_kernel(const at::Tensor& h) {
  const int64_t hidden = h.size(-1) / 2;
  const int64_t rows = hidden == 0 ? 0 : h.numel() / (2 * hidden);
  std::vector<int64_t> sizes = h.sizes().vec();
  sizes.back() = hidden;
  at::Tensor out = at::empty(sizes, h.options());
  c10::cuda::CUDAGuard guard(h.device());
  cuda::swiglu_forward(h.data_ptr(), out.data_ptr(), rows, hidden, kernel_dtype(h.scalar_type()),
                       c10::cuda::getCurrentCUDAStream(h.device().index()).stream());
  return out;
}

class SwigluFunction : public torch::autograd::Function<SwigluFunction> {
 public:
  // h (..., 2H) contiguous CUDA -> (..., H); saves h only.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& h) {
    ctx->save_for_backward({h});
    return forward_kernel(h);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const at::Tensor h = ctx->get_saved_variables()[0];
    if (!grad_outputs[0].defined()) return {at::Tensor()};
    const at::Tensor g = grad_outputs[0].to(h.scalar_type()).contiguous();
    const int64_t hidden = h.size(-1) / 2;
    const int64_t rows = hidden == 0 ? 0 : h.numel() / (2 * hidden);
    at::Tensor grad_h = at::empty_like(h, at::MemoryFormat::Contiguous);
    c10::cuda::CUDAGuard guard(h.device());
    cuda::swiglu_backward(h.data_ptr(), g.data_ptr(), grad_h.data_ptr(), rows, hidden, kernel_dtype(h.scalar_type()),
                          c10::cuda::getCurrentCUDAStream(h.device().index()).stream());
    return {grad_h};
  }
};
#endif

// ---- LayerNorm (+ cast) and LayerScale residual of the student's blocks ------------------------------------------

#ifdef G2L_WITH_CUDA
bool aligned16(const at::Tensor& t) { return (reinterpret_cast<uintptr_t>(t.data_ptr()) & 15u) == 0; }

// t contiguous and 16-byte aligned (a copy only for the rare offset view).
at::Tensor kernel_ready(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return aligned16(c) ? c : c.clone(at::MemoryFormat::Contiguous);
}

// Whether the norm.cu kernels take t, of rows of d, as it is: contiguous, 16-byte aligned, d % 4 == 0, d <= 2048.
bool norm_kernel_fits(const at::Tensor& t, int64_t d) {
  return d % 4 == 0 && d <= cuda::kNormMaxDim && t.is_contiguous() && aligned16(t);
}

// Partial rows the backward kernels write: four blocks per multiprocessor, at most one per `rows_per_block` rows.
int64_t partial_blocks(const at::Device& device, int64_t rows, int64_t rows_per_block) {
  const int64_t sms = at::cuda::getDeviceProperties(device.index())->multiProcessorCount;
  const int64_t needed = (rows + rows_per_block - 1) / rows_per_block;
  return std::max<int64_t>(1, std::min<int64_t>(4 * sms, needed));
}

cudaStream_t stream_of(const at::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }
#endif

// y = LayerNorm(x) in out_dtype; saves x, w, b, mean, rstd. CUDA: cuda/norm.cu; CPU: native_layer_norm (+ cast).
class LayerNormCastFunction : public torch::autograd::Function<LayerNormCastFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                            double eps, at::ScalarType out_dtype) {
    const int64_t d = x.size(-1);
    at::Tensor y, mean, rstd;
#ifdef G2L_WITH_CUDA
    if (x.is_cuda()) {
      const int64_t rows = x.numel() / d;
      y = at::empty(x.sizes(), x.options().dtype(out_dtype));
      mean = at::empty({rows}, x.options());
      rstd = at::empty({rows}, x.options());
      c10::cuda::CUDAGuard guard(x.device());
      cuda::layer_norm_forward(x.data_ptr<float>(), w.data_ptr<float>(), b.data_ptr<float>(), rows, d,
                               static_cast<float>(eps), y.data_ptr(), kernel_dtype(out_dtype), mean.data_ptr<float>(),
                               rstd.data_ptr<float>(), stream_of(x));
    }
#endif
    if (!y.defined()) {
      auto r = at::native_layer_norm(x, {d}, w, b, eps);
      y = std::get<0>(r).to(out_dtype);
      mean = std::get<1>(r);
      rstd = std::get<2>(r);
    }
    ctx->save_for_backward({x, w, b, mean, rstd});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &b = saved[2], &mean = saved[3], &rstd = saved[4];
    const at::Tensor& g = grad_outputs[0];
    if (!g.defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    const int64_t d = x.size(-1);
#ifdef G2L_WITH_CUDA
    if (x.is_cuda()) {
      const int64_t rows = x.numel() / d;
      at::Tensor gc = kernel_ready(kernel_dtype(g.scalar_type()) >= 0 ? g : g.to(at::kFloat));
      at::Tensor dx = at::empty_like(x, at::MemoryFormat::Contiguous);
      const int64_t parts = partial_blocks(x.device(), rows, 8);  // 8 rows: one per warp of a block
      at::Tensor partial = at::empty({2, parts, d}, x.options());
      c10::cuda::CUDAGuard guard(x.device());
      cuda::layer_norm_backward(gc.data_ptr(), kernel_dtype(gc.scalar_type()), x.data_ptr<float>(),
                                mean.data_ptr<float>(), rstd.data_ptr<float>(), w.data_ptr<float>(), rows, d,
                                dx.data_ptr<float>(), partial[0].data_ptr<float>(), partial[1].data_ptr<float>(), parts,
                                stream_of(x));
      at::Tensor sums = partial.sum(1);  // (2, d)
      return {dx, sums[0].view(w.sizes()), sums[1].view(b.sizes()), at::Tensor(), at::Tensor()};
    }
#endif
    auto r = at::native_layer_norm_backward(g.to(x.scalar_type()), x, {d}, mean, rstd, w, b, {true, true, true});
    return {std::get<0>(r), std::get<1>(r), std::get<2>(r), at::Tensor(), at::Tensor()};
  }
};

// out = x + gamma * y (float32); saves y and gamma. CUDA: cuda/norm.cu; CPU: the same expression in at:: ops.
class LayerScaleAddFunction : public torch::autograd::Function<LayerScaleAddFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& y, const at::Tensor& gamma) {
    ctx->save_for_backward({y, gamma});
#ifdef G2L_WITH_CUDA
    if (x.is_cuda()) {
      const int64_t d = x.size(-1);
      at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
      c10::cuda::CUDAGuard guard(x.device());
      cuda::layer_scale_add_forward(x.data_ptr<float>(), y.data_ptr(), kernel_dtype(y.scalar_type()),
                                    gamma.data_ptr<float>(), x.numel() / d, d, out.data_ptr<float>(), stream_of(x));
      return out;
    }
#endif
    return x + gamma * y.to(at::kFloat);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &y = saved[0], &gamma = saved[1];
    const at::Tensor& g = grad_outputs[0];
    if (!g.defined()) return {at::Tensor(), at::Tensor(), at::Tensor()};
    const int64_t d = y.size(-1);
#ifdef G2L_WITH_CUDA
    if (y.is_cuda()) {
      const int64_t rows = y.numel() / d;
      at::Tensor gc = kernel_ready(g.to(at::kFloat));
      at::Tensor grad_y = at::empty_like(y, at::MemoryFormat::Contiguous);
      const int64_t parts = partial_blocks(y.device(), rows, 16);
      at::Tensor partial = at::empty({parts, d}, gc.options());
      c10::cuda::CUDAGuard guard(y.device());
      cuda::layer_scale_add_backward(gc.data_ptr<float>(), y.data_ptr(), kernel_dtype(y.scalar_type()),
                                     gamma.data_ptr<float>(), rows, d, grad_y.data_ptr(), partial.data_ptr<float>(),
                                     parts, stream_of(y));
      return {gc, grad_y, partial.sum(0).view(gamma.sizes())};
    }
#endif
    at::Tensor grad_y = (g * gamma).to(y.scalar_type());
    at::Tensor grad_gamma = (g * y.to(at::kFloat)).reshape({-1, d}).sum(0).view(gamma.sizes());
    return {g, grad_y, grad_gamma};
  }
};

}  // namespace

at::Tensor swiglu(const at::Tensor& h, bool fused) {
  TORCH_CHECK(h.dim() >= 1 && h.size(-1) % 2 == 0, "swiglu: the last dimension must be even (2H), got ", h.sizes());
#ifdef G2L_WITH_CUDA
  if (h.is_cuda() && kernel_dtype(h.scalar_type()) >= 0 && fused) {
    at::Tensor hc = h.contiguous();
    if (at::GradMode::is_enabled() && h.requires_grad()) return SwigluFunction::apply(hc);
    return forward_kernel(hc);
  }
#else
  (void)fused;
#endif
  return swiglu_unfused(h);
}

namespace {

// Whether LayerNormCastFunction takes these: float32 x (..., D), w and b of D, on one device; the CPU runs its at::
// bodies, CUDA the kernels, which also need out_dtype to be one of theirs and kernel-ready tensors.
bool layer_norm_cast_fits(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, at::ScalarType out_dtype) {
  const int64_t d = x.dim() >= 1 ? x.size(-1) : 0;
  if (!(d > 0 && x.numel() > 0 && x.scalar_type() == at::kFloat && w.defined() && b.defined() &&
        w.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat && w.numel() == d && b.numel() == d &&
        w.device() == x.device() && b.device() == x.device())) {
    return false;
  }
  if (x.is_cpu()) return true;
#ifdef G2L_WITH_CUDA
  if (x.is_cuda()) {
    return kernel_dtype(out_dtype) >= 0 && norm_kernel_fits(x, d) && norm_kernel_fits(w, d) && norm_kernel_fits(b, d);
  }
#endif
  (void)out_dtype;
  return false;
}

// Whether LayerScaleAddFunction takes these: float32 x (..., D) and gamma (D), y of x's shape in a float dtype, on
// one device; CUDA also needs y in a kernel dtype and kernel-ready tensors.
bool layer_scale_add_fits(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gamma) {
  const int64_t d = x.dim() >= 1 ? x.size(-1) : 0;
  if (!(d > 0 && x.numel() > 0 && x.scalar_type() == at::kFloat && gamma.scalar_type() == at::kFloat &&
        gamma.dim() == 1 && gamma.numel() == d && y.sizes() == x.sizes() && at::isFloatingType(y.scalar_type()) &&
        y.device() == x.device() && gamma.device() == x.device())) {
    return false;
  }
  if (x.is_cpu()) return true;
#ifdef G2L_WITH_CUDA
  if (x.is_cuda()) {
    return kernel_dtype(y.scalar_type()) >= 0 && norm_kernel_fits(x, d) && norm_kernel_fits(y, d) &&
           norm_kernel_fits(gamma, d);
  }
#endif
  return false;
}

}  // namespace

at::Tensor block_layer_norm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, double eps, bool fused) {
  if (fused) {
    // The CPU: the Function's at:: bodies in x's dtype (so its wiring is tested there). CUDA: only under autocast,
    // where the next product would cast the result to the autocast dtype anyway.
    at::ScalarType out = x.scalar_type();
#ifdef G2L_WITH_CUDA
    if (x.is_cuda()) {
      out = at::autocast::is_autocast_enabled(at::kCUDA) ? at::autocast::get_autocast_dtype(at::kCUDA) : at::kFloat;
    }
#endif
    if ((x.is_cpu() || out != at::kFloat) && layer_norm_cast_fits(x, w, b, out)) {
      return LayerNormCastFunction::apply(x, w, b, eps, out);
    }
  }
  return at::layer_norm(x, {x.size(-1)}, w, b, eps);
}

at::Tensor layer_scale_add(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gamma, bool fused) {
  if (fused && layer_scale_add_fits(x, y, gamma)) return LayerScaleAddFunction::apply(x, y, gamma);
  return at::addcmul(x, y, gamma);
}

namespace detail {

at::Tensor layer_norm_cast(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, double eps,
                           at::ScalarType out_dtype) {
  TORCH_CHECK(layer_norm_cast_fits(x, w, b, out_dtype), "layer_norm_cast: the fused path does not take these tensors");
  return LayerNormCastFunction::apply(x, w, b, eps, out_dtype);
}

at::Tensor layer_scale_add_fused(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gamma) {
  TORCH_CHECK(layer_scale_add_fits(x, y, gamma), "layer_scale_add: the fused path does not take these tensors");
  return LayerScaleAddFunction::apply(x, y, gamma);
}

bool residual_layer_norm_fused(at::Tensor& x, const at::Tensor& y, const at::Tensor& gamma, const at::Tensor& w,
                               const at::Tensor& b, double eps, bool want_fp8, NormOutput& out) {
  out.sizes = x.sizes().vec();
#ifdef G2L_WITH_CUDA
  const int64_t d = x.dim() >= 1 ? x.size(-1) : 0;
  const at::ScalarType t = x.scalar_type();
  auto same = [&](const at::Tensor& o) { return o.defined() && o.scalar_type() == t && o.device() == x.device(); };
  const bool fits = x.is_cuda() && (t == at::kHalf || t == at::kBFloat16) && d > 0 && x.numel() > 0 && same(y) &&
                    y.sizes() == x.sizes() && same(w) && same(b) && w.numel() == d && b.numel() == d &&
                    (!gamma.defined() || (same(gamma) && gamma.numel() == d)) && norm_kernel_fits(x, d) &&
                    norm_kernel_fits(y, d) && norm_kernel_fits(w, d) && norm_kernel_fits(b, d) &&
                    (!gamma.defined() || norm_kernel_fits(gamma, d));
  if (!fits) return false;
  const int64_t rows = x.numel() / d;
  const bool fp8 = want_fp8 && t == at::kBFloat16;
  c10::cuda::CUDAGuard guard(x.device());
  if (fp8) {
    out.q.codes = at::empty({rows, d}, x.options().dtype(at::kFloat8_e4m3fn));
    out.q.scales = at::empty({rows, 1}, x.options().dtype(at::kFloat));
  } else {
    out.h = at::empty_like(x);
  }
  cuda::residual_layer_norm(
      x.data_ptr(), y.data_ptr(), gamma.defined() ? gamma.data_ptr() : nullptr, w.data_ptr(), b.data_ptr(),
      kernel_dtype(t), rows, d, static_cast<float>(eps), fp8 ? nullptr : out.h.data_ptr(),
      fp8 ? static_cast<uint8_t*>(out.q.codes.data_ptr()) : nullptr, fp8 ? out.q.scales.data_ptr<float>() : nullptr,
      static_cast<float>(kFp8MinAmax), stream_of(x));
  return true;
#else
  (void)x, (void)y, (void)gamma, (void)w, (void)b, (void)eps, (void)want_fp8;
  return false;
#endif
}

}  // namespace detail

NormOutput residual_layer_norm_(at::Tensor& x, const at::Tensor& y, const at::Tensor& gamma, const at::Tensor& w,
                                const at::Tensor& b, double eps, bool want_fp8, bool fused) {
  NormOutput out;
  if (fused && detail::residual_layer_norm_fused(x, y, gamma, w, b, eps, want_fp8, out)) return out;
  if (gamma.defined()) {
    x.addcmul_(y, gamma);
  } else {
    x.add_(y);
  }
  out.sizes = x.sizes().vec();
  out.h = at::layer_norm(x, {x.size(-1)}, w, b, eps);
  return out;
}

}  // namespace g2l
