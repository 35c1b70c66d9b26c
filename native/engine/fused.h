// Fused element-wise operations of the models (engine-internal API).
//
// swiglu(h): the SwiGLU of the ViT MLPs (timm GluMlp with gate_last=False, transformers Dinov2SwiGLUFFN):
//   h (..., 2H) -> (..., H),  out = silu(a) * b,  a = h[..., :H] (gate), b = h[..., H:] (value)
// On CUDA float32 / float16 / bfloat16 it runs as one kernel each way (cuda/swiglu.cu), wrapped in a
// torch::autograd::Function that saves only h (made contiguous) and computes the whole input gradient in one pass:
//   s = sigmoid(a),  dL/da = g b s (1 + a (1 - s)),  dL/db = g a s,  g = dL/dout
// in float32, reading and writing the input dtype (so under bf16 autocast the result is rounded once instead of
// after silu and again after the product, and the backward skips the mul / silu backward kernels and the chunk's
// gradient concatenation). Without grad (no_grad, inference mode, or an input that does not require grad, e.g. the
// frozen teacher) only the forward kernel runs and nothing is saved. The output is a fresh at::empty: with the CUDA
// caching allocator that costs no device work, so an out= variant into a preallocated buffer would gain nothing.
// Everywhere else (CPU, float64, a CPU-only engine, or the kernel switched off) it is exactly the unfused
// expression `at::silu(chunk 0) * chunk 1` with ordinary autograd, so CPU results are bit-for-bit unchanged.
//
// Switch: the environment variable G2L_FUSED_SWIGLU=0 (also "false" / "off") disables the fused kernel; it is read
// once, at the first swiglu() call of the process. set_fused_swiglu() overrides it at run time (e.g. to compare
// fused and unfused in one process); fused_swiglu_enabled() reports the current setting.
#pragma once

#include <ATen/ATen.h>

namespace g2l {

/** h (..., 2H) -> silu(h[..., :H]) * h[..., H:] (..., H), differentiable in h. Throws if the last dim is odd. */
at::Tensor swiglu(const at::Tensor& h);

/** Whether swiglu() uses the fused CUDA kernel where it can (default on; G2L_FUSED_SWIGLU=0 turns it off). */
bool fused_swiglu_enabled();

/** Turns the fused SwiGLU kernel on or off for the rest of the process (overrides G2L_FUSED_SWIGLU). */
void set_fused_swiglu(bool enabled);

}  // namespace g2l
