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
// Everywhere else (CPU, float64, a CPU-only engine, or `fused` false) it is exactly the unfused
// expression `at::silu(chunk 0) * chunk 1` with ordinary autograd, so CPU results are bit-for-bit unchanged.
//
// Each function takes its switch as an argument: the calling model passes its KernelOptions (g2l/kernels.h:
// fused_swiglu, fused_norm), which the run's configuration sets; nothing here is process-wide.
//
// The trained student's blocks under bf16 autocast (float32 residual stream, float32 LayerNorm and LayerScale
// parameters) have two more fused operations, switched together by KernelOptions::fused_norm (default off):
//
// block_layer_norm(x, w, b, eps): the LayerNorm before a block's attention / MLP. On CUDA with autocast on and x in
//   float32 it returns the LayerNorm already in the autocast dtype (cuda/norm.cu: one kernel reads x and writes the
//   rounded result, where at::layer_norm writes float32 and the next product's autocast reads it again to cast it);
//   the backward takes dL/dy in that dtype and writes dL/dx in float32 plus the weight and bias gradients in one
//   kernel (per-block partial sums, summed after). The next consumer must be a product under autocast (which would
//   cast to that dtype anyway), so the numbers are those of at::layer_norm followed by the cast.
// layer_scale_add(x, y, gamma): the LayerScale residual x + gamma * y with x and gamma float32 and y a product's
//   output (bf16 under autocast). Unfused, autocast promotes y to a float32 copy, addcmul reads all three, and the
//   backward runs g * gamma, a cast, g * y and a reduction; fused (cuda/norm.cu) it is one kernel each way:
//   dL/dx = g, dL/dy = g * gamma rounded to y's dtype, dL/dgamma = column sums of g * y.
// residual_layer_norm_(x, y, gamma, w, b, eps, want_fp8): the frozen teacher's residual and the next LayerNorm
//   (inference, no autograd): x += gamma * y in place (x += y without gamma), then LayerNorm(x). One kernel
//   (cuda/norm.cu) for float16 / bfloat16 on CUDA: it reads x and y once and writes x and the result, where the
//   unfused ops read x again for the LayerNorm. want_fp8 (the next products are FP8, quant.h): in bfloat16 the kernel
//   writes the result's FP8 row codes and scales instead of the result, the numbers quantize_rows_fp8 gives for it.
// Where the kernels do not apply (fused false, other dtypes, no autocast, d % 4 != 0 or d > 2048, unaligned views)
// these are exactly at::layer_norm and at::addcmul (x.addcmul_ / x.add_ then at::layer_norm for the residual). On the
// CPU the switch runs the same autograd Functions with at:: bodies (native_layer_norm and its backward; the
// element-wise expressions above), so their wiring is tested there.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "kernels/quant.h"

namespace g2l {

/**
 * h (..., 2H) -> silu(h[..., :H]) * h[..., H:] (..., H), differentiable in h. Throws if the last dim is odd. fused:
 * the CUDA kernel where it applies (KernelOptions::fused_swiglu).
 */
at::Tensor swiglu(const at::Tensor& h, bool fused);

/**
 * LayerNorm over the last dim (weight and bias of size D); with `fused` (KernelOptions::fused_norm) under CUDA autocast
 * possibly in the autocast dtype.
 */
at::Tensor block_layer_norm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, double eps, bool fused);

/** x + gamma * y (gamma of size D, broadcast over the rows), differentiable in all three; fused: see the top. */
at::Tensor layer_scale_add(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gamma, bool fused);

/** A LayerNorm's result for the products that read it: h, or (FP8 products) its row codes q of an input of `sizes`. */
struct NormOutput {
  at::Tensor h;
  Fp8Rows q;
  std::vector<int64_t> sizes;
};

/**
 * x += gamma * y (gamma undefined: x += y) in place, then LayerNorm(x; w, b, eps); inference only (see the top).
 * fused: the one-kernel path where it applies (KernelOptions::fused_norm).
 */
NormOutput residual_layer_norm_(at::Tensor& x, const at::Tensor& y, const at::Tensor& gamma, const at::Tensor& w,
                                const at::Tensor& b, double eps, bool want_fp8, bool fused);

namespace detail {
// The fused paths without the switch, for fused_norm_check (fused_check.cpp). On CUDA each throws where its kernel
// does not apply; on the CPU the autograd Functions run their at:: bodies and the residual has no fused path (false).
at::Tensor layer_norm_cast(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, double eps,
                           at::ScalarType out_dtype);
at::Tensor layer_scale_add_fused(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gamma);
bool residual_layer_norm_fused(at::Tensor& x, const at::Tensor& y, const at::Tensor& gamma, const at::Tensor& w,
                               const at::Tensor& b, double eps, bool want_fp8, NormOutput& out);
}  // namespace detail

// Packed q/k/v products (KernelOptions::packed_qkv, default on; vit.cpp): while a model with separate
// q, k and v projections (the transformers layout, e.g. the Hibou-L student) trains, its attention runs one product of
// the concatenated weights and biases (3D x D) instead of three, as the timm layout stores them. Same dot products;
// under autocast the LayerNorm's result is cast once instead of once per product, the backward computes the input
// gradient as one product (summed in the GEMM's float32 accumulator, not as three rounded results added) and the
// concatenation's backward hands each weight its slice of one weight gradient. Inference (no grad) keeps the three
// products (no per-forward copy of the weights).

}  // namespace g2l
