// Fused SwiGLU of the ViT MLPs (contract: native/engine/kernels/fused.h; the launchers are declared in kernels.h).
//
// h (rows, 2H) row-major, gate a = h[:, :H], value b = h[:, H:], s = sigmoid(a):
//   forward:  out = silu(a) * b = a s b                                  (rows, H)
//   backward: d_a = g b s (1 + a (1 - s)),  d_b = g a s                   (rows, 2H), g = dL/dout
// (d silu(a)/da = s + a s (1 - s).) One thread per V adjacent output columns of a row, V = 16 bytes / element size
// when H is a multiple of V and the buffers are 16-byte aligned (one 128-bit load per half and per operand), else
// V = 1. Math in float32; loads and stores in the tensor's dtype (float32, float16 or bfloat16, the latter two
// rounded to nearest even). Half and bfloat16 conversions: device.cuh.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/device.cuh"
#include "kernels/cuda/kernels.h"

namespace g2l::cuda {

namespace {

// V consecutive elements <-> float32; V * sizeof(T) == 16 is one 128-bit access (the caller guarantees alignment).
template <typename T, int V>
__device__ __forceinline__ void load(const T* __restrict__ p, float (&f)[V]) {
  if constexpr (V * sizeof(T) == 16) {
    uint4 raw = *reinterpret_cast<const uint4*>(p);
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int k = 0; k < V; ++k) f[k] = to_float(e[k]);
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) f[k] = to_float(p[k]);
  }
}
template <typename T, int V>
__device__ __forceinline__ void store(T* __restrict__ p, const float (&f)[V]) {
  if constexpr (V * sizeof(T) == 16) {
    uint4 raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int k = 0; k < V; ++k) e[k] = from_float<T>(f[k]);
    *reinterpret_cast<uint4*>(p) = raw;
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) p[k] = from_float<T>(f[k]);
  }
}

__device__ __forceinline__ float sigmoid(float a) { return 1.f / (1.f + __expf(-a)); }

// h (rows, 2H) -> out (rows, H). Idx: uint32 when rows * H fits, else int64 (the division is the costly part).
template <typename T, int V, typename Idx>
__global__ void swiglu_forward_kernel(const T* __restrict__ h, T* __restrict__ out, Idx rows, Idx hidden) {
  const Idx per_row = hidden / V;
  const Idx total = rows * per_row;
  const Idx stride = static_cast<Idx>(gridDim.x) * blockDim.x;
  for (Idx i = static_cast<Idx>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const Idx r = i / per_row;
    const Idx c = (i - r * per_row) * V;
    const T* a_ptr = h + r * 2 * hidden + c;
    float a[V], b[V], o[V];
    load<T, V>(a_ptr, a);
    load<T, V>(a_ptr + hidden, b);
#pragma unroll
    for (int k = 0; k < V; ++k) o[k] = a[k] * sigmoid(a[k]) * b[k];
    store<T, V>(out + r * hidden + c, o);
  }
}

// h (rows, 2H), g (rows, H) -> grad_h (rows, 2H).
template <typename T, int V, typename Idx>
__global__ void swiglu_backward_kernel(const T* __restrict__ h, const T* __restrict__ g, T* __restrict__ grad_h,
                                       Idx rows, Idx hidden) {
  const Idx per_row = hidden / V;
  const Idx total = rows * per_row;
  const Idx stride = static_cast<Idx>(gridDim.x) * blockDim.x;
  for (Idx i = static_cast<Idx>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const Idx r = i / per_row;
    const Idx c = (i - r * per_row) * V;
    const Idx in_off = r * 2 * hidden + c;
    float a[V], b[V], go[V], da[V], db[V];
    load<T, V>(h + in_off, a);
    load<T, V>(h + in_off + hidden, b);
    load<T, V>(g + r * hidden + c, go);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float s = sigmoid(a[k]);
      const float gs = go[k] * s;
      da[k] = gs * b[k] * (1.f + a[k] * (1.f - s));
      db[k] = gs * a[k];
    }
    store<T, V>(grad_h + in_off, da);
    store<T, V>(grad_h + in_off + hidden, db);
  }
}

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;  // grid-stride beyond this (far more than any ViT batch needs)

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

unsigned blocks_for(int64_t work) {
  int64_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

template <typename T, int V>
void launch_forward(const void* h, void* out, int64_t rows, int64_t hidden, cudaStream_t stream) {
  const int64_t work = rows * (hidden / V);
  const T* hp = static_cast<const T*>(h);
  T* op = static_cast<T*>(out);
  if (rows * 2 * hidden <= int64_t{0xffffffff}) {
    swiglu_forward_kernel<T, V, uint32_t>
        <<<blocks_for(work), kThreads, 0, stream>>>(hp, op, static_cast<uint32_t>(rows), static_cast<uint32_t>(hidden));
  } else {
    swiglu_forward_kernel<T, V, int64_t><<<blocks_for(work), kThreads, 0, stream>>>(hp, op, rows, hidden);
  }
  check_launch("swiglu_forward");
}

template <typename T, int V>
void launch_backward(const void* h, const void* g, void* grad_h, int64_t rows, int64_t hidden, cudaStream_t stream) {
  const int64_t work = rows * (hidden / V);
  const T* hp = static_cast<const T*>(h);
  const T* gp = static_cast<const T*>(g);
  T* dp = static_cast<T*>(grad_h);
  if (rows * 2 * hidden <= int64_t{0xffffffff}) {
    swiglu_backward_kernel<T, V, uint32_t><<<blocks_for(work), kThreads, 0, stream>>>(
        hp, gp, dp, static_cast<uint32_t>(rows), static_cast<uint32_t>(hidden));
  } else {
    swiglu_backward_kernel<T, V, int64_t><<<blocks_for(work), kThreads, 0, stream>>>(hp, gp, dp, rows, hidden);
  }
  check_launch("swiglu_backward");
}

template <typename T>
void dispatch_forward(const void* h, void* out, int64_t rows, int64_t hidden, cudaStream_t stream) {
  constexpr int kVec = static_cast<int>(16 / sizeof(T));
  if (hidden % kVec == 0 && aligned16(h) && aligned16(out)) {
    launch_forward<T, kVec>(h, out, rows, hidden, stream);
  } else {
    launch_forward<T, 1>(h, out, rows, hidden, stream);
  }
}

template <typename T>
void dispatch_backward(const void* h, const void* g, void* grad_h, int64_t rows, int64_t hidden, cudaStream_t stream) {
  constexpr int kVec = static_cast<int>(16 / sizeof(T));
  if (hidden % kVec == 0 && aligned16(h) && aligned16(g) && aligned16(grad_h)) {
    launch_backward<T, kVec>(h, g, grad_h, rows, hidden, stream);
  } else {
    launch_backward<T, 1>(h, g, grad_h, rows, hidden, stream);
  }
}

}  // namespace

void swiglu_forward(const void* h, void* out, int64_t rows, int64_t hidden, int dtype, cudaStream_t stream) {
  if (rows < 0 || hidden < 0) throw std::runtime_error("swiglu_forward: negative size");
  if (rows == 0 || hidden == 0) return;
  switch (dtype) {
    case kElemF32:
      dispatch_forward<float>(h, out, rows, hidden, stream);
      break;
    case kElemF16:
      dispatch_forward<Half>(h, out, rows, hidden, stream);
      break;
    case kElemBF16:
      dispatch_forward<BFloat16>(h, out, rows, hidden, stream);
      break;
    default:
      throw std::runtime_error("swiglu_forward: unsupported dtype code " + std::to_string(dtype));
  }
}

void swiglu_backward(const void* h, const void* grad_out, void* grad_h, int64_t rows, int64_t hidden, int dtype,
                     cudaStream_t stream) {
  if (rows < 0 || hidden < 0) throw std::runtime_error("swiglu_backward: negative size");
  if (rows == 0 || hidden == 0) return;
  switch (dtype) {
    case kElemF32:
      dispatch_backward<float>(h, grad_out, grad_h, rows, hidden, stream);
      break;
    case kElemF16:
      dispatch_backward<Half>(h, grad_out, grad_h, rows, hidden, stream);
      break;
    case kElemBF16:
      dispatch_backward<BFloat16>(h, grad_out, grad_h, rows, hidden, stream);
      break;
    default:
      throw std::runtime_error("swiglu_backward: unsupported dtype code " + std::to_string(dtype));
  }
}

}  // namespace g2l::cuda
