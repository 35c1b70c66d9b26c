// Image preprocessing kernels: uint8 RGB tiles to a model's normalised float input in one pass.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "kernels/cuda/device.cuh"
#include "kernels/cuda/kernels.h"

namespace g2l::cuda {

namespace {

__global__ void normalize_kernel(const uint8_t* __restrict__ images, float* __restrict__ out, int64_t n, int64_t hw,
                                 float3 scale, float3 shift) {
  // out[b, c, p] = images[b, p, c] * scale[c] + shift[c]   with scale = 1/(255 std), shift = -mean/std
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * hw) return;
  int64_t b = i / hw;
  int64_t p = i - b * hw;
  const uint8_t* px = images + i * 3;
  float* o = out + b * 3 * hw + p;
  o[0] = static_cast<float>(px[0]) * scale.x + shift.x;
  o[hw] = static_cast<float>(px[1]) * scale.y + shift.y;
  o[2 * hw] = static_cast<float>(px[2]) * scale.z + shift.z;
}

}  // namespace

void normalize_u8_nhwc_to_f32_nchw(const uint8_t* images, float* out, int64_t n, int64_t h, int64_t w, float mean0,
                                   float mean1, float mean2, float std0, float std1, float std2, cudaStream_t stream) {
  const int64_t total = n * h * w;
  if (total == 0) return;
  const int threads = 256;
  const int64_t blocks = (total + threads - 1) / threads;
  float3 scale = make_float3(1.f / (255.f * std0), 1.f / (255.f * std1), 1.f / (255.f * std2));
  float3 shift = make_float3(-mean0 / std0, -mean1 / std1, -mean2 / std2);
  normalize_kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(images, out, n, h * w, scale, shift);
  check_launch("normalize_u8_nhwc_to_f32_nchw");
}

}  // namespace g2l::cuda
