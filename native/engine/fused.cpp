// Fused element-wise operations (contract: fused.h; kernels: cuda/swiglu.cu).
#ifdef G2L_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda/kernels.h"
#endif

#include <torch/torch.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "fused.h"

namespace g2l {

namespace {

// -1: not read yet; 0 / 1: off / on.
std::atomic<int> g_fused_swiglu{-1};

bool env_fused_swiglu() {
  const char* v = std::getenv("G2L_FUSED_SWIGLU");
  if (v == nullptr) return true;
  return !(std::strcmp(v, "0") == 0 || std::strcmp(v, "false") == 0 || std::strcmp(v, "off") == 0);
}

// Today's expression, bit for bit: the CPU path and the fallback everywhere the kernel does not apply.
at::Tensor swiglu_unfused(const at::Tensor& h) {
  auto halves = h.chunk(2, -1);
  return at::silu(halves[0]) * halves[1];
}

#ifdef G2L_WITH_CUDA
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The kernel's dtype code, or -1 for dtypes it does not cover.
int kernel_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cuda::kSwigluF32;
    case at::kHalf: return cuda::kSwigluF16;
    case at::kBFloat16: return cuda::kSwigluBF16;
    default: return -1;
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

}  // namespace

bool fused_swiglu_enabled() {
  int s = g_fused_swiglu.load(std::memory_order_relaxed);
  if (s < 0) {
    int expected = -1;
    g_fused_swiglu.compare_exchange_strong(expected, env_fused_swiglu() ? 1 : 0);
    s = g_fused_swiglu.load(std::memory_order_relaxed);
  }
  return s == 1;
}

void set_fused_swiglu(bool enabled) { g_fused_swiglu.store(enabled ? 1 : 0); }

at::Tensor swiglu(const at::Tensor& h) {
  TORCH_CHECK(h.dim() >= 1 && h.size(-1) % 2 == 0, "swiglu: the last dimension must be even (2H), got ", h.sizes());
#ifdef G2L_WITH_CUDA
  if (h.is_cuda() && kernel_dtype(h.scalar_type()) >= 0 && fused_swiglu_enabled()) {
    at::Tensor hc = h.contiguous();
    if (at::GradMode::is_enabled() && h.requires_grad()) return SwigluFunction::apply(hc);
    return forward_kernel(hc);
  }
#endif
  return swiglu_unfused(h);
}

}  // namespace g2l
