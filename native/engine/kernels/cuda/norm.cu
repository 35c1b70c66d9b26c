// Fused LayerNorm (float32 in, autocast dtype out) and LayerScale residual (x + gamma * y) of the trained student's
// blocks, forward and backward (contract: native/engine/kernels/fused.h; launchers declared in kernels.h).
//
// Why: under bf16 autocast the student's residual stream is float32. Unfused, each LayerNorm writes float32 that the
// next product casts to bf16 (one more read and write), and each LayerScale residual first casts the product's bf16
// output to float32 (autocast's promotion), multiplies and adds, and in the backward runs a multiply, a cast, another
// multiply and a reduction over the rows. Here each is one kernel each way.
//
// Layout: row-major (rows, d), d % 4 == 0, 16-byte-aligned buffers; each thread moves 4 consecutive columns (one
// 16-byte float32 access, one 8-byte half / bfloat16 access). Math in float32, one rounding on store.
//   LayerNorm: one warp per row (two passes over registers: mean, then the centred variance, as biased variance like
//   torch.nn.functional.layer_norm); the backward keeps the row's weight / bias gradient sums per lane and reduces the
//   block's warps through shared memory in a fixed order, writing one partial row per block.
//   LayerScale: the forward is element-wise; the backward gives each block a contiguous run of rows and each thread 4
//   columns, walking down the rows (coalesced across the threads of a row) and writing its column sums as the block's
//   partial row.
// No atomics anywhere: the partial rows are summed by the caller, so results do not depend on scheduling.
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/device.cuh"
#include "kernels/cuda/kernels.h"

namespace g2l::cuda {

namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / kWarp;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Four consecutive elements <-> float32 (p aligned to 4 elements: 16 bytes for float, 8 for half / bfloat16).
__device__ __forceinline__ void load4(const float* p, float (&f)[4]) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  f[0] = v.x;
  f[1] = v.y;
  f[2] = v.z;
  f[3] = v.w;
}
template <typename T>
__device__ __forceinline__ void load4(const T* p, float (&f)[4]) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int k = 0; k < 4; ++k) f[k] = to_float(e[k]);
}
__device__ __forceinline__ void store4(float* p, const float (&f)[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(f[0], f[1], f[2], f[3]);
}
template <typename T>
__device__ __forceinline__ void store4(T* p, const float (&f)[4]) {
  uint2 raw;
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int k = 0; k < 4; ++k) e[k] = from_float<T>(f[k]);
  *reinterpret_cast<uint2*>(p) = raw;
}

// ---- LayerNorm ------------------------------------------------------------------------------------------------
// NV: 4-column chunks per lane (chunk c = lane + 32 j, j < NV, valid while c < d / 4).

// A warp's row: its mean and 1 / sqrt(biased variance + eps), the variance from a second, centred pass over the
// lane's chunks v (zeros past the row); s is the lane's sum of its chunks.
template <int NV>
__device__ __forceinline__ void row_moments(const float (&v)[NV][4], float s, int lane, int d4, float inv_d, float eps,
                                            float& mu, float& rs) {
  mu = warp_sum(s) * inv_d;
  float q = 0.f;
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    if (lane + kWarp * j < d4) {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float t = v[j][k] - mu;
        q += t * t;
      }
    }
  }
  rs = rsqrtf(warp_sum(q) * inv_d + eps);
}

// The LayerNorm's affine step on chunk c of a row: v = (v - mu) * rs * w + b (w, b of the row's length, any dtype).
template <typename W>
__device__ __forceinline__ void normalize4(float (&v)[4], float mu, float rs, const W* __restrict__ w,
                                           const W* __restrict__ b, int c) {
  float wv[4], bv[4];
  load4(w + 4 * c, wv);
  load4(b + 4 * c, bv);
#pragma unroll
  for (int k = 0; k < 4; ++k) v[k] = (v[k] - mu) * rs * wv[k] + bv[k];
}

template <typename T, int NV>
__global__ void __launch_bounds__(kThreads)
    layer_norm_forward_kernel(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
                              T* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, int64_t rows,
                              int d, float eps) {
  const int lane = threadIdx.x % kWarp;
  const int d4 = d / 4;
  const float inv_d = 1.f / static_cast<float>(d);
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; r < rows; r += nwarps) {
    const float* xr = x + r * d;
    float v[NV][4];
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int c = lane + kWarp * j;
      if (c < d4) {
        load4(xr + 4 * c, v[j]);
        s += (v[j][0] + v[j][1]) + (v[j][2] + v[j][3]);
      } else {
        v[j][0] = v[j][1] = v[j][2] = v[j][3] = 0.f;
      }
    }
    float mu, rs;
    row_moments<NV>(v, s, lane, d4, inv_d, eps, mu, rs);
    T* yr = y + r * d;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int c = lane + kWarp * j;
      if (c < d4) {
        normalize4(v[j], mu, rs, w, b, c);
        store4(yr + 4 * c, v[j]);
      }
    }
    if (lane == 0) {
      mean[r] = mu;
      rstd[r] = rs;
    }
  }
}

// Grid: exactly partial_blocks blocks (a block without rows writes zero partials). Dynamic shared memory: 2 d floats.
template <typename T, int NV>
__global__ void __launch_bounds__(kThreads)
    layer_norm_backward_kernel(const T* __restrict__ dy, const float* __restrict__ x, const float* __restrict__ mean,
                               const float* __restrict__ rstd, const float* __restrict__ w, float* __restrict__ dx,
                               float* __restrict__ dw_partial, float* __restrict__ db_partial, int64_t rows, int d) {
  extern __shared__ float smem[];  // [0, d): weight gradient, [d, 2d): bias gradient
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int d4 = d / 4;
  const float inv_d = 1.f / static_cast<float>(d);
  float gw[NV][4], gb[NV][4];
#pragma unroll
  for (int j = 0; j < NV; ++j) {
#pragma unroll
    for (int k = 0; k < 4; ++k) gw[j][k] = gb[j][k] = 0.f;
  }
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp; r < rows; r += nwarps) {
    const float mu = mean[r], rs = rstd[r];
    const float* xr = x + r * d;
    const T* dyr = dy + r * d;
    // Pass 1: the row sums of g = dy * w and g * xhat, and this lane's columns of the weight / bias gradients.
    float s1 = 0.f, s2 = 0.f;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int c = lane + kWarp * j;
      if (c < d4) {
        float xv[4], gv[4], wv[4];
        load4(xr + 4 * c, xv);
        load4(dyr + 4 * c, gv);
        load4(w + 4 * c, wv);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const float xh = (xv[k] - mu) * rs;
          const float g = gv[k] * wv[k];
          s1 += g;
          s2 += g * xh;
          gw[j][k] += gv[k] * xh;
          gb[j][k] += gv[k];
        }
      }
    }
    s1 = warp_sum(s1) * inv_d;
    s2 = warp_sum(s2) * inv_d;
    // Pass 2 (the row is in L1 / L2 from pass 1): dx.
    float* dxr = dx + r * d;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int c = lane + kWarp * j;
      if (c < d4) {
        float xv[4], gv[4], wv[4], o[4];
        load4(xr + 4 * c, xv);
        load4(dyr + 4 * c, gv);
        load4(w + 4 * c, wv);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const float xh = (xv[k] - mu) * rs;
          o[k] = rs * (gv[k] * wv[k] - s1 - xh * s2);
        }
        store4(dxr + 4 * c, o);
      }
    }
  }
  // The block's warps into shared memory one after another (fixed order), then one partial row per block.
  for (int i = threadIdx.x; i < 2 * d; i += blockDim.x) smem[i] = 0.f;
  __syncthreads();
  for (int turn = 0; turn < kWarpsPerBlock; ++turn) {
    if (warp == turn) {
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        const int c = lane + kWarp * j;
        if (c < d4) {
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            smem[4 * c + k] += gw[j][k];
            smem[d + 4 * c + k] += gb[j][k];
          }
        }
      }
    }
    __syncthreads();
  }
  float* dwp = dw_partial + static_cast<int64_t>(blockIdx.x) * d;
  float* dbp = db_partial + static_cast<int64_t>(blockIdx.x) * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    dwp[i] = smem[i];
    dbp[i] = smem[d + i];
  }
}

// ---- LayerScale residual --------------------------------------------------------------------------------------

// out = x + gamma * y; Idx: uint32 when rows * d fits (the modulo by d / 4 is the costly part), else int64.
template <typename T, typename Idx>
__global__ void layer_scale_add_forward_kernel(const float* __restrict__ x, const T* __restrict__ y,
                                               const float* __restrict__ gamma, float* __restrict__ out, Idx total4,
                                               Idx d4) {
  const Idx stride = static_cast<Idx>(gridDim.x) * blockDim.x;
  for (Idx i = static_cast<Idx>(blockIdx.x) * blockDim.x + threadIdx.x; i < total4; i += stride) {
    const Idx c = i % d4;
    float xv[4], yv[4], gv[4], o[4];
    load4(x + 4 * i, xv);
    load4(y + 4 * i, yv);
    load4(gamma + 4 * c, gv);
#pragma unroll
    for (int k = 0; k < 4; ++k) o[k] = __fadd_rn(xv[k], __fmul_rn(gv[k], yv[k]));  // no FMA: as mul, then add
    store4(out + 4 * i, o);
  }
}

// Block b: rows [b * rows_per_block, (b + 1) * rows_per_block); thread: columns 4c.. of those rows.
template <typename T>
__global__ void layer_scale_add_backward_kernel(const float* __restrict__ g, const T* __restrict__ y,
                                                const float* __restrict__ gamma, T* __restrict__ grad_y,
                                                float* __restrict__ gamma_partial, int64_t rows, int d,
                                                int64_t rows_per_block) {
  const int d4 = d / 4;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * rows_per_block;
  const int64_t r1 = r0 + rows_per_block < rows ? r0 + rows_per_block : rows;
  for (int c = threadIdx.x; c < d4; c += blockDim.x) {
    float gm[4], acc[4] = {0.f, 0.f, 0.f, 0.f};
    load4(gamma + 4 * c, gm);
#pragma unroll 4
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t off = r * d + 4 * c;
      float gv[4], yv[4], o[4];
      load4(g + off, gv);
      load4(y + off, yv);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        acc[k] += gv[k] * yv[k];
        o[k] = gv[k] * gm[k];
      }
      store4(grad_y + off, o);
    }
    store4(gamma_partial + static_cast<int64_t>(blockIdx.x) * d + 4 * c, acc);
  }
}

// ---- Residual + LayerNorm of the frozen teacher (inference) ----------------------------------------------------
// One warp per row: x (T) += gamma * y (kGamma) or y, stored back rounded to T; then the LayerNorm of the stored row
// (the values the unfused ops would read) with w, b (T). kFp8: the result rounded to T (bfloat16), then its row's FP8
// codes and scale (quant.h's scheme, quant.cu's rounding) instead of the result itself.

template <typename T, int NV, bool kGamma, bool kFp8>
__global__ void __launch_bounds__(kThreads)
    residual_layer_norm_kernel(T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ gamma,
                               const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ out,
                               uint8_t* __restrict__ codes, float* __restrict__ scales, int64_t rows, int d, float eps,
                               float min_amax) {
  const int lane = threadIdx.x % kWarp;
  const int d4 = d / 4;
  const float inv_d = 1.f / static_cast<float>(d);
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; r < rows; r += nwarps) {
    T* xr = x + r * d;
    const T* yr = y + r * d;
    float v[NV][4];
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int c = lane + kWarp * j;
      if (c < d4) {
        float xv[4], yv[4];
        load4(xr + 4 * c, xv);
        load4(yr + 4 * c, yv);
        if (kGamma) {
          float gv[4];
          load4(gamma + 4 * c, gv);
#pragma unroll
          for (int k = 0; k < 4; ++k) xv[k] = xv[k] + gv[k] * yv[k];
        } else {
#pragma unroll
          for (int k = 0; k < 4; ++k) xv[k] = __fadd_rn(xv[k], yv[k]);
        }
        store4(xr + 4 * c, xv);
        // Continue from the stored (rounded) values.
#pragma unroll
        for (int k = 0; k < 4; ++k) v[j][k] = to_float(from_float<T>(xv[k]));
        s += (v[j][0] + v[j][1]) + (v[j][2] + v[j][3]);
      } else {
        v[j][0] = v[j][1] = v[j][2] = v[j][3] = 0.f;
      }
    }
    float mu, rs;
    row_moments<NV>(v, s, lane, d4, inv_d, eps, mu, rs);
    float amax = 0.f;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int c = lane + kWarp * j;
      if (c < d4) {
        normalize4(v[j], mu, rs, w, b, c);
        if (kFp8) {
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            v[j][k] = to_float(from_float<T>(v[j][k]));  // the bf16 result the quantisation would read
            amax = fmaxf(amax, fabsf(v[j][k]));
          }
        } else {
          store4(out + r * d + 4 * c, v[j]);
        }
      }
    }
    if (kFp8) {
#pragma unroll
      for (int o = kWarp / 2; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
      const float scale = __fdiv_rn(fmaxf(amax, min_amax), kE4M3Max);
      const float inv = __frcp_rn(scale);
      uint8_t* cr = codes + r * d;
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        const int c = lane + kWarp * j;
        if (c < d4) {
          const uint32_t packed = e4m3_code(v[j][0], inv) | (e4m3_code(v[j][1], inv) << 8) |
                                  (e4m3_code(v[j][2], inv) << 16) | (e4m3_code(v[j][3], inv) << 24);
          *reinterpret_cast<uint32_t*>(cr + 4 * c) = packed;
        }
      }
      if (lane == 0) scales[r] = scale;
    }
  }
}

// ---- launch helpers -------------------------------------------------------------------------------------------

constexpr int64_t kMaxBlocks = int64_t{1} << 20;

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

void check_shape(const char* what, int64_t rows, int64_t d) {
  if (rows < 0 || d <= 0 || d % 4 != 0 || d > kNormMaxDim) {
    throw std::runtime_error(std::string(what) + ": needs rows >= 0 and 0 < d <= " + std::to_string(kNormMaxDim) +
                             " with d % 4 == 0, got rows " + std::to_string(rows) + ", d " + std::to_string(d));
  }
}

void check_aligned(const char* what, std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs) {
    if (!aligned16(p)) throw std::runtime_error(std::string(what) + ": buffers must be 16-byte aligned");
  }
}

unsigned blocks_for(int64_t work, int64_t per_block) {
  int64_t blocks = (work + per_block - 1) / per_block;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

template <int N>
using Chunks = std::integral_constant<int, N>;

// Calls f(Chunks<NV>{}) with the smallest NV in {1, 2, 4, 6, 8, 12, 16} covering d / 4 chunks over a warp.
template <typename F>
void with_chunks(int64_t d, F&& f) {
  const int64_t need = (d / 4 + kWarp - 1) / kWarp;
  if (need <= 1)
    f(Chunks<1>{});
  else if (need <= 2)
    f(Chunks<2>{});
  else if (need <= 4)
    f(Chunks<4>{});
  else if (need <= 6)
    f(Chunks<6>{});
  else if (need <= 8)
    f(Chunks<8>{});
  else if (need <= 12)
    f(Chunks<12>{});
  else
    f(Chunks<16>{});
}

// Calls f(T{}) with T the element type of the dtype code.
template <typename F>
void with_dtype(const char* what, int dtype, F&& f) {
  switch (dtype) {
    case kElemF32:
      f(float{});
      break;
    case kElemF16:
      f(Half{});
      break;
    case kElemBF16:
      f(BFloat16{});
      break;
    default:
      throw std::runtime_error(std::string(what) + ": unsupported dtype code " + std::to_string(dtype));
  }
}

}  // namespace

void layer_norm_forward(const float* x, const float* w, const float* b, int64_t rows, int64_t d, float eps, void* y,
                        int y_dtype, float* mean, float* rstd, cudaStream_t stream) {
  check_shape("layer_norm_forward", rows, d);
  check_aligned("layer_norm_forward", {x, w, b, y});
  if (rows == 0) return;
  const unsigned blocks = blocks_for(rows, kWarpsPerBlock);
  with_dtype("layer_norm_forward", y_dtype, [&](auto tag) {
    using T = decltype(tag);
    with_chunks(d, [&](auto chunks) {
      constexpr int NV = decltype(chunks)::value;
      layer_norm_forward_kernel<T, NV>
          <<<blocks, kThreads, 0, stream>>>(x, w, b, static_cast<T*>(y), mean, rstd, rows, static_cast<int>(d), eps);
    });
  });
  check_launch("layer_norm_forward");
}

void layer_norm_backward(const void* dy, int dy_dtype, const float* x, const float* mean, const float* rstd,
                         const float* w, int64_t rows, int64_t d, float* dx, float* dw_partial, float* db_partial,
                         int64_t partial_blocks, cudaStream_t stream) {
  check_shape("layer_norm_backward", rows, d);
  check_aligned("layer_norm_backward", {dy, x, w, dx, dw_partial, db_partial});
  if (partial_blocks < 1 || partial_blocks > kMaxBlocks)
    throw std::runtime_error("layer_norm_backward: bad partial_blocks");
  const size_t smem = static_cast<size_t>(2 * d) * sizeof(float);
  with_dtype("layer_norm_backward", dy_dtype, [&](auto tag) {
    using T = decltype(tag);
    with_chunks(d, [&](auto chunks) {
      constexpr int NV = decltype(chunks)::value;
      layer_norm_backward_kernel<T, NV><<<static_cast<unsigned>(partial_blocks), kThreads, smem, stream>>>(
          static_cast<const T*>(dy), x, mean, rstd, w, dx, dw_partial, db_partial, rows, static_cast<int>(d));
    });
  });
  check_launch("layer_norm_backward");
}

void layer_scale_add_forward(const float* x, const void* y, int y_dtype, const float* gamma, int64_t rows, int64_t d,
                             float* out, cudaStream_t stream) {
  check_shape("layer_scale_add_forward", rows, d);
  check_aligned("layer_scale_add_forward", {x, y, gamma, out});
  const int64_t total4 = rows * (d / 4);
  if (total4 == 0) return;
  const unsigned blocks = blocks_for(total4, kThreads);
  with_dtype("layer_scale_add_forward", y_dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* yp = static_cast<const T*>(y);
    if (4 * total4 <= int64_t{0xffffffff}) {  // element offsets 4 * i stay within uint32
      layer_scale_add_forward_kernel<T, uint32_t><<<blocks, kThreads, 0, stream>>>(
          x, yp, gamma, out, static_cast<uint32_t>(total4), static_cast<uint32_t>(d / 4));
    } else {
      layer_scale_add_forward_kernel<T, int64_t><<<blocks, kThreads, 0, stream>>>(x, yp, gamma, out, total4, d / 4);
    }
  });
  check_launch("layer_scale_add_forward");
}

void layer_scale_add_backward(const float* g, const void* y, int y_dtype, const float* gamma, int64_t rows, int64_t d,
                              void* grad_y, float* gamma_partial, int64_t partial_blocks, cudaStream_t stream) {
  check_shape("layer_scale_add_backward", rows, d);
  check_aligned("layer_scale_add_backward", {g, y, gamma, grad_y, gamma_partial});
  if (partial_blocks < 1 || partial_blocks > kMaxBlocks) {
    throw std::runtime_error("layer_scale_add_backward: bad partial_blocks");
  }
  const int64_t rows_per_block = (rows + partial_blocks - 1) / partial_blocks;
  // One thread per 4 columns, at least a warp, at most kThreads (then each thread takes several column groups).
  const int64_t d4 = d / 4;
  const int threads = static_cast<int>(d4 >= kThreads ? kThreads : ((d4 + kWarp - 1) / kWarp) * kWarp);
  with_dtype("layer_scale_add_backward", y_dtype, [&](auto tag) {
    using T = decltype(tag);
    layer_scale_add_backward_kernel<T><<<static_cast<unsigned>(partial_blocks), threads, 0, stream>>>(
        g, static_cast<const T*>(y), gamma, static_cast<T*>(grad_y), gamma_partial, rows, static_cast<int>(d),
        rows_per_block);
  });
  check_launch("layer_scale_add_backward");
}

void residual_layer_norm(void* x, const void* y, const void* gamma, const void* w, const void* b, int dtype,
                         int64_t rows, int64_t d, float eps, void* out, uint8_t* codes, float* scales, float min_amax,
                         cudaStream_t stream) {
  check_shape("residual_layer_norm", rows, d);
  check_aligned("residual_layer_norm", {x, y, w, b});
  if (gamma != nullptr) check_aligned("residual_layer_norm", {gamma});
  const bool fp8 = codes != nullptr;
  if (fp8 ? (scales == nullptr || (reinterpret_cast<uintptr_t>(codes) & 3u) != 0 || dtype != kElemBF16)
          : out == nullptr) {
    throw std::runtime_error("residual_layer_norm: give out, or codes (4-byte aligned) and scales with bfloat16 x");
  }
  if (!fp8) check_aligned("residual_layer_norm", {out});
  if (rows == 0) return;
  const unsigned blocks = blocks_for(rows, kWarpsPerBlock);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, float>) {
      throw std::runtime_error("residual_layer_norm: float16 or bfloat16 only");
    } else {
      with_chunks(d, [&](auto chunks) {
        constexpr int NV = decltype(chunks)::value;
        auto launch = [&](auto kernel) {
          kernel<<<blocks, kThreads, 0, stream>>>(
              static_cast<T*>(x), static_cast<const T*>(y), static_cast<const T*>(gamma), static_cast<const T*>(w),
              static_cast<const T*>(b), static_cast<T*>(out), codes, scales, rows, static_cast<int>(d), eps, min_amax);
        };
        if (gamma != nullptr) {
          if (fp8)
            launch(residual_layer_norm_kernel<T, NV, true, true>);
          else
            launch(residual_layer_norm_kernel<T, NV, true, false>);
        } else {
          if (fp8)
            launch(residual_layer_norm_kernel<T, NV, false, true>);
          else
            launch(residual_layer_norm_kernel<T, NV, false, false>);
        }
      });
    }
  };
  with_dtype("residual_layer_norm", dtype, run);
  check_launch("residual_layer_norm");
}

}  // namespace g2l::cuda
