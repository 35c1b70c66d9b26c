// Launchers of the engine's CUDA kernels. Plain C++ signatures (raw device pointers, a stream), so the .cu files
// need no libtorch headers and compile fast; the .cpp callers check shapes and pass the pointers.
#pragma once

#include <cstdint>

typedef struct CUstream_st* cudaStream_t;

namespace g2l::cuda {

/**
 * images (N,H,W,3) uint8 -> out (N,3,H,W) float32: out = (x/255 - mean[c]) / std[c].
 * One thread per output pixel; reads the three channels of a pixel together.
 */
void normalize_u8_nhwc_to_f32_nchw(const uint8_t* images, float* out, int64_t n, int64_t h, int64_t w, float mean0,
                                   float mean1, float mean2, float std0, float std1, float std2, cudaStream_t stream);

}  // namespace g2l::cuda

// ---------------------------------------------------------------------------------------------------------------
// Log-sum distillation loss (loss.cu; the math is in native/engine/train/loss.h). All float32, row-major (B,D).
// ---------------------------------------------------------------------------------------------------------------
namespace g2l::cuda {

/**
 * Forward. p, t: (B,D). Writes the BN statistics of both sides, mean_p/rstd_p/mean_t/rstd_t (D), the per-row sums
 * row_sum (B) of |f_s - f_t|^alpha, and the scalar loss (1). teacher_bn = 0 leaves t unnormalised (mean 0, rstd 1).
 * sample_reduction = 0: loss = log(sum_i row_sum_i); 1: loss = mean_i log(row_sum_i).
 */
void log_sum_loss_forward(const float* p, const float* t, int64_t b, int64_t d, float alpha, float eps, int teacher_bn,
                          int sample_reduction, float* mean_p, float* rstd_p, float* mean_t, float* rstd_t,
                          float* row_sum, float* loss, cudaStream_t stream);

/**
 * Backward to the projector output: grad_p (B,D) = dL/dp * grad_loss[0], from the forward's saved statistics and
 * row sums (the BN backward with batch statistics is folded in).
 */
void log_sum_loss_backward(const float* p, const float* t, int64_t b, int64_t d, float alpha, int sample_reduction,
                           const float* mean_p, const float* rstd_p, const float* mean_t, const float* rstd_t,
                           const float* row_sum, const float* grad_loss, float* grad_p, cudaStream_t stream);

}  // namespace g2l::cuda

// ---- tile augmentation (augment.cu; the contract is native/engine/train/augment.h) ----
namespace g2l::cuda {

struct AugmentNorm {
  float mean[3];
  float std[3];
};

enum AugmentTeacherDType : int { kAugmentF32 = 0, kAugmentF16 = 1, kAugmentBF16 = 2 };

/**
 * The whole augmentation of a batch in one kernel launch, one thread block per sample:
 * tiles (B,H,W,3) uint8, params (B,15) float32 (columns of g2l/augment.h) -> teacher (B,3,crop,crop) in
 * teacher_dtype with the teacher's normalisation and student (B,3,crop,crop) float32 with the student's.
 * workspace: (B,3,crop,crop) float32 scratch for the blurred samples, or null when no row has blur on.
 */
void augment_tiles(const uint8_t* tiles, int64_t batch, int64_t tile_h, int64_t tile_w, const float* params,
                   int64_t crop, int64_t blur_kernel, float* workspace, void* teacher, int teacher_dtype,
                   float* student, AugmentNorm teacher_norm, AugmentNorm student_norm, cudaStream_t stream);

}  // namespace g2l::cuda

// ---- fused SwiGLU of the ViT MLPs (swiglu.cu; the contract is native/engine/kernels/fused.h) ----
namespace g2l::cuda {

/** Element type of the fused kernels' float tensors (swiglu.cu, norm.cu). */
enum ElementDType : int { kElemF32 = 0, kElemF16 = 1, kElemBF16 = 2 };

/**
 * h (rows, 2*hidden) -> out (rows, hidden), both contiguous in dtype: out = silu(h[:, :hidden]) * h[:, hidden:],
 * computed in float32 and rounded once.
 */
void swiglu_forward(const void* h, void* out, int64_t rows, int64_t hidden, int dtype, cudaStream_t stream);

/**
 * h (rows, 2*hidden), grad_out (rows, hidden) -> grad_h (rows, 2*hidden), all contiguous in dtype. With a, b the
 * halves of h, s = sigmoid(a), g = grad_out: grad_h = [g b s (1 + a (1 - s)), g a s].
 */
void swiglu_backward(const void* h, const void* grad_out, void* grad_h, int64_t rows, int64_t hidden, int dtype,
                     cudaStream_t stream);

}  // namespace g2l::cuda

// ---- FP8 row quantisation of the teacher's activations (quant.cu; the scheme is native/engine/kernels/quant.h) ----
namespace g2l::cuda {

/**
 * x (rows,cols) bfloat16 row-major (raw bits) -> codes (rows,cols) float8_e4m3fn (raw bytes) and scales (rows)
 * float32, per row: scale = max(amax |x|, min_amax) / 448, code = e4m3(clamp(x * (1/scale), -448, 448)) rounded to
 * nearest even: the same numbers as quant.cpp's at:: version. One thread block per row; rows of any length (16-byte
 * vector loads where cols % 8 == 0 and the rows are aligned).
 */
void quantize_rows_bf16_to_fp8(const uint16_t* x, int64_t rows, int64_t cols, uint8_t* codes, float* scales,
                               float min_amax, cudaStream_t stream);

}  // namespace g2l::cuda

// ---- fused LayerNorm and LayerScale residual of the trained student's blocks (norm.cu; contract: fused.h) ----
// All row-major with rows = numel / d; float32 statistics and accumulators; y / dy / grad_y in the ElementDType
// given. Requirements (checked by the callers, which fall back to at:: ops otherwise): contiguous, d % 4 == 0,
// d <= kNormMaxDim, every pointer 16-byte aligned. The backward kernels write per-block column partial sums
// (partial_blocks, d) that the caller sums over dim 0 (deterministic: no atomics).
namespace g2l::cuda {

constexpr int64_t kNormMaxDim = 2048;

/** y = (x - mean) * rstd * w + b per row, rounded once to y_dtype; mean and rstd (rows) saved for the backward. */
void layer_norm_forward(const float* x, const float* w, const float* b, int64_t rows, int64_t d, float eps, void* y,
                        int y_dtype, float* mean, float* rstd, cudaStream_t stream);

/**
 * dx (rows,d) float32 = rstd * (g - mean_row(g) - xhat * mean_row(g * xhat)), g = dy * w, xhat = (x - mean) * rstd;
 * dw_partial / db_partial (partial_blocks, d): per-block sums of dy * xhat and dy.
 */
void layer_norm_backward(const void* dy, int dy_dtype, const float* x, const float* mean, const float* rstd,
                         const float* w, int64_t rows, int64_t d, float* dx, float* dw_partial, float* db_partial,
                         int64_t partial_blocks, cudaStream_t stream);

/** out (rows,d) float32 = x + gamma[col] * y, y in y_dtype (the LayerScale residual x + gamma * f(x)). */
void layer_scale_add_forward(const float* x, const void* y, int y_dtype, const float* gamma, int64_t rows, int64_t d,
                             float* out, cudaStream_t stream);

/**
 * From g = dL/dout (rows,d) float32: grad_y = g * gamma[col] rounded to y_dtype, and gamma_partial
 * (partial_blocks, d) the per-block column sums of g * y. (dL/dx is g itself.)
 */
void layer_scale_add_backward(const float* g, const void* y, int y_dtype, const float* gamma, int64_t rows, int64_t d,
                              void* grad_y, float* gamma_partial, int64_t partial_blocks, cudaStream_t stream);

/**
 * The frozen teacher's residual + LayerNorm, in place, all in dtype (float16 or bfloat16): x += gamma * y (gamma null:
 * x += y), rounded to dtype, then the LayerNorm of the stored x with w, b into out; or, with codes (rows,d) and scales
 * (rows) given instead (bfloat16 only), the FP8 codes and row scales of the bfloat16 LayerNorm result (quant.h's
 * scheme, quantize_rows_bf16_to_fp8's numbers).
 */
void residual_layer_norm(void* x, const void* y, const void* gamma, const void* w, const void* b, int dtype,
                         int64_t rows, int64_t d, float eps, void* out, uint8_t* codes, float* scales, float min_amax,
                         cudaStream_t stream);

}  // namespace g2l::cuda
