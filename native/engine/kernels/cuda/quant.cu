// Fused FP8 (E4M3) quantisation of activation rows for the teacher's FP8 matrix products (scheme: quant.h).
//
// One thread block per row (a token: 1536 to 8192 bf16 values for H-optimus-0): pass 1 reads the row and reduces
// |x| to its maximum (warp shuffles, then one value per warp in shared memory), pass 2 reads it again (from L1/L2)
// and writes the codes. Each thread moves 8 values at a time (16-byte loads, 8-byte stores) when the row allows.
//
// The numbers are those of quant.cpp's at:: version, operation for operation: scale = max(amax, min_amax) / 448 and
// its reciprocal both correctly rounded (__fdiv_rn, __frcp_rn: independent of --use_fast_math), q = x * (1/scale)
// (an IEEE product), clamped to +-448 (NaN stays NaN), converted to E4M3 round-to-nearest-even by the bit arithmetic
// of c10's Float8_e4m3fn (no cuda_fp8.h: it needs the CCCL headers, and this way the rounding is c10's by
// construction). Only rows with NaN, or float32-denormal values (flushed by the fast-math build), can differ.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "kernels/cuda/device.cuh"
#include "kernels/cuda/kernels.h"

namespace g2l::cuda {

namespace {

constexpr int kMaxThreads = 256;

__device__ __forceinline__ float bf16_bits_to_float(uint32_t bits) { return __uint_as_float(bits << 16); }

// The two bf16 values packed in a 32-bit word, low half first (little-endian memory order).
__device__ __forceinline__ float lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

__device__ __forceinline__ float absmax_word(uint32_t w) { return fmaxf(fabsf(lo(w)), fabsf(hi(w))); }

// Four codes of two words (four bf16 values) packed into 32 bits, first value in the lowest byte.
__device__ __forceinline__ uint32_t codes4(uint32_t w0, uint32_t w1, float inv) {
  return e4m3_code(lo(w0), inv) | (e4m3_code(hi(w0), inv) << 8) | (e4m3_code(lo(w1), inv) << 16) |
         (e4m3_code(hi(w1), inv) << 24);
}

template <bool kVec>
__global__ void quantize_rows_kernel(const uint16_t* __restrict__ x, int64_t cols, uint8_t* __restrict__ codes,
                                     float* __restrict__ scales, float min_amax) {
  const int64_t row = blockIdx.x;
  const uint16_t* xr = x + row * cols;
  uint8_t* cr = codes + row * cols;

  float amax = 0.f;
  if (kVec) {
    const uint4* xv = reinterpret_cast<const uint4*>(xr);
    for (int64_t i = threadIdx.x; i < cols / 8; i += blockDim.x) {
      const uint4 u = xv[i];
      amax = fmaxf(amax, fmaxf(fmaxf(absmax_word(u.x), absmax_word(u.y)), fmaxf(absmax_word(u.z), absmax_word(u.w))));
    }
  } else {
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) amax = fmaxf(amax, fabsf(bf16_bits_to_float(xr[i])));
  }

  __shared__ float warp_max[kMaxThreads / 32];
  __shared__ float row_scale[2];  // scale, 1/scale
  for (int offset = 16; offset > 0; offset >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = amax;
  __syncthreads();
  if (threadIdx.x < 32) {
    const int warps = (blockDim.x + 31) >> 5;
    float m = threadIdx.x < warps ? warp_max[threadIdx.x] : 0.f;
    for (int offset = 16; offset > 0; offset >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
    if (threadIdx.x == 0) {
      const float scale = __fdiv_rn(fmaxf(m, min_amax), kE4M3Max);
      row_scale[0] = scale;
      row_scale[1] = __frcp_rn(scale);
      scales[row] = scale;
    }
  }
  __syncthreads();
  const float inv = row_scale[1];

  if (kVec) {
    const uint4* xv = reinterpret_cast<const uint4*>(xr);
    uint2* cv = reinterpret_cast<uint2*>(cr);
    for (int64_t i = threadIdx.x; i < cols / 8; i += blockDim.x) {
      const uint4 u = xv[i];
      cv[i] = make_uint2(codes4(u.x, u.y, inv), codes4(u.z, u.w, inv));
    }
  } else {
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
      cr[i] = static_cast<uint8_t>(e4m3_code(bf16_bits_to_float(xr[i]), inv));
    }
  }
}

}  // namespace

void quantize_rows_bf16_to_fp8(const uint16_t* x, int64_t rows, int64_t cols, uint8_t* codes, float* scales,
                               float min_amax, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const bool vec =
      cols % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(codes) % 8 == 0;
  const int64_t items = vec ? cols / 8 : cols;
  int threads = static_cast<int>(((items + 31) / 32) * 32);
  if (threads > kMaxThreads) threads = kMaxThreads;
  if (threads < 32) threads = 32;
  if (vec) {
    quantize_rows_kernel<true><<<static_cast<unsigned>(rows), threads, 0, stream>>>(x, cols, codes, scales, min_amax);
  } else {
    quantize_rows_kernel<false><<<static_cast<unsigned>(rows), threads, 0, stream>>>(x, cols, codes, scales, min_amax);
  }
  check_launch("quantize_rows_bf16_to_fp8");
}

}  // namespace g2l::cuda
