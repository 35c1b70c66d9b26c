// Shared by the .cu files: the launch check and the half/bfloat16 bit types with their float32 conversions.
//
// No cuda_fp16.h / cuda_bf16.h (they need CCCL headers the pip toolkit lacks): half and bfloat16 travel as their bits
// and are converted with PTX cvt instructions, rounding to nearest even.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace g2l::cuda {

/** Throws if the last kernel launch failed, naming `what` and the likely cause. */
inline void check_launch(const char* what) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": kernel launch failed: " + cudaGetErrorString(err) +
                             " (check that the engine was built for this GPU's architecture: g2l-native info)");
  }
}

struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(Half v) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
  return f;
}
__device__ __forceinline__ float to_float(BFloat16 v) { return __uint_as_float(static_cast<uint32_t>(v.bits) << 16); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ Half from_float<Half>(float v) {
  uint16_t h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
  return Half{h};
}
template <> __device__ __forceinline__ BFloat16 from_float<BFloat16>(float v) {
#if __CUDA_ARCH__ >= 800
  uint16_t h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
  return BFloat16{h};
#else
  // Round to nearest even by hand (cvt.rn.bf16.f32 needs sm_80); NaN stays a quiet NaN.
  uint32_t u = __float_as_uint(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return BFloat16{static_cast<uint16_t>((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return BFloat16{static_cast<uint16_t>(u >> 16)};
#endif
}

}  // namespace g2l::cuda
