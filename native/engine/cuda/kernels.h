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
