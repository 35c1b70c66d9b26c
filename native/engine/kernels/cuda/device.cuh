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

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ Half from_float<Half>(float v) {
  uint16_t h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
  return Half{h};
}
template <>
__device__ __forceinline__ BFloat16 from_float<BFloat16>(float v) {
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

// ---- FP8 (E4M3) codes, as c10::Float8_e4m3fn rounds (quant.cu, norm.cu; the scheme is native/engine/kernels/quant.h)
// ----

/** Largest finite float8_e4m3fn. */
constexpr float kE4M3Max = 448.f;

// float -> float8_e4m3fn bits, round to nearest even; |f| >= 480 (unreachable after the clamp) and NaN give NaN.
__device__ __forceinline__ uint32_t e4m3_bits(float f) {
  uint32_t bits = __float_as_uint(f);
  const uint32_t sign = bits & 0x80000000u;
  bits ^= sign;
  uint32_t result;
  if (bits >= (1087u << 20)) {
    result = 0x7fu;
  } else if (bits < (121u << 23)) {
    // Below the smallest normal E4M3 (2^-6): adding 2^14 leaves the subnormal code in the low bits, rounded by the
    // float addition itself (to nearest even).
    constexpr uint32_t kDenormMagic = 141u << 23;
    result = __float_as_uint(__fadd_rn(__uint_as_float(bits), __uint_as_float(kDenormMagic))) - kDenormMagic;
  } else {
    const uint32_t mant_odd = (bits >> 20) & 1u;
    bits += (static_cast<uint32_t>(7 - 127) << 23) + 0x7ffffu + mant_odd;
    result = bits >> 20;
  }
  return (result & 0xffu) | (sign >> 24);
}

__device__ __forceinline__ uint32_t e4m3_code(float v, float inv_scale) {
  float q = __fmul_rn(v, inv_scale);
  q = q > kE4M3Max ? kE4M3Max : (q < -kE4M3Max ? -kE4M3Max : q);
  return e4m3_bits(q);
}

}  // namespace g2l::cuda
