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
void normalize_u8_nhwc_to_f32_nchw(const uint8_t* images, float* out, int64_t n, int64_t h, int64_t w,
                                   float mean0, float mean1, float mean2, float std0, float std1, float std2,
                                   cudaStream_t stream);

}  // namespace g2l::cuda

// ---- tile augmentation (augment.cu; the contract is native/engine/augment.h) ----
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
