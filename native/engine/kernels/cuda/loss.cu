// Fused kernels of the log-sum distillation loss (math and notation in native/engine/train/loss.h).
//
// p (B,D) is the projector output, t (B,D) the teacher features, both float32 row-major. B is the batch (tens to a
// few hundred), D the teacher width (1024-1536), so the column kernels give one thread per feature and walk the
// rows (adjacent threads read adjacent floats), and the row kernel gives one block per sample.
//
//   forward:  column_stats -> row_power_sums -> finish_loss      (3 launches, no host synchronisation)
//   backward: one thread per column folds the BN backward with batch statistics into the power-sum gradient:
//             g = dL/df_s = alpha |d|^(alpha-1) sign(d) w_i,  w_i = 1/S (batch) or 1/(B S_i) (sample)
//             dL/dp = rstd (g - mean_i g - f_s mean_i(g f_s))
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "kernels/cuda/device.cuh"
#include "kernels/cuda/kernels.h"

namespace g2l::cuda {

namespace {

__device__ __forceinline__ float abs_pow(float x, float alpha) {
  float a = fabsf(x);
  if (alpha == 4.f) {
    float a2 = a * a;
    return a2 * a2;
  }
  if (alpha == 2.f) return a * a;
  return powf(a, alpha);
}

// alpha |x|^(alpha-1) sign(x)
__device__ __forceinline__ float abs_pow_grad(float x, float alpha) {
  if (alpha == 4.f) return 4.f * x * x * x;
  if (alpha == 2.f) return 2.f * x;
  return copysignf(alpha * powf(fabsf(x), alpha - 1.f), x);
}

// Per-column mean and 1/sqrt(biased var + eps) of p, and of t when teacher_bn (else 0 and 1): BatchNorm1d's
// training-mode statistics, two passes for accuracy.
__global__ void column_stats_kernel(const float* __restrict__ p, const float* __restrict__ t, int64_t b, int64_t d,
                                    float eps, int teacher_bn, float* __restrict__ mean_p, float* __restrict__ rstd_p,
                                    float* __restrict__ mean_t, float* __restrict__ rstd_t) {
  int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= d) return;
  float inv_b = 1.f / static_cast<float>(b);
  float s = 0.f;
  for (int64_t i = 0; i < b; ++i) s += p[i * d + j];
  float m = s * inv_b;
  float v = 0.f;
  for (int64_t i = 0; i < b; ++i) {
    float x = p[i * d + j] - m;
    v += x * x;
  }
  mean_p[j] = m;
  rstd_p[j] = rsqrtf(v * inv_b + eps);
  if (!teacher_bn) {
    mean_t[j] = 0.f;
    rstd_t[j] = 1.f;
    return;
  }
  s = 0.f;
  for (int64_t i = 0; i < b; ++i) s += t[i * d + j];
  m = s * inv_b;
  v = 0.f;
  for (int64_t i = 0; i < b; ++i) {
    float x = t[i * d + j] - m;
    v += x * x;
  }
  mean_t[j] = m;
  rstd_t[j] = rsqrtf(v * inv_b + eps);
}

template <int kThreads>
__device__ float block_sum(float v, float* shared) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = threadIdx.x < kThreads / 32 ? shared[threadIdx.x] : 0.f;
  if (warp == 0) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  }
  return v;  // valid in thread 0
}

// row_sum[i] = sum_j |f_s - f_t|_{ij}^alpha, one block per row.
template <int kThreads>
__global__ void row_power_sums_kernel(const float* __restrict__ p, const float* __restrict__ t, int64_t d, float alpha,
                                      const float* __restrict__ mean_p, const float* __restrict__ rstd_p,
                                      const float* __restrict__ mean_t, const float* __restrict__ rstd_t,
                                      float* __restrict__ row_sum) {
  __shared__ float shared[kThreads / 32];
  const int64_t i = blockIdx.x;
  const float* pr = p + i * d;
  const float* tr = t + i * d;
  float acc = 0.f;
  for (int64_t j = threadIdx.x; j < d; j += kThreads) {
    float diff = (pr[j] - mean_p[j]) * rstd_p[j] - (tr[j] - mean_t[j]) * rstd_t[j];
    acc += abs_pow(diff, alpha);
  }
  acc = block_sum<kThreads>(acc, shared);
  if (threadIdx.x == 0) row_sum[i] = acc;
}

// loss = log(sum_i row_sum_i) or mean_i log(row_sum_i); accumulated in double (one block).
template <int kThreads>
__global__ void finish_loss_kernel(const float* __restrict__ row_sum, int64_t b, int sample_reduction,
                                   float* __restrict__ loss) {
  __shared__ double shared[kThreads];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < b; i += kThreads) {
    acc += sample_reduction ? log(static_cast<double>(row_sum[i])) : static_cast<double>(row_sum[i]);
  }
  shared[threadIdx.x] = acc;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    double total = shared[0];
    loss[0] = static_cast<float>(sample_reduction ? total / static_cast<double>(b) : log(total));
  }
}

__global__ void backward_kernel(const float* __restrict__ p, const float* __restrict__ t, int64_t b, int64_t d,
                                float alpha, int sample_reduction, const float* __restrict__ mean_p,
                                const float* __restrict__ rstd_p, const float* __restrict__ mean_t,
                                const float* __restrict__ rstd_t, const float* __restrict__ row_sum,
                                const float* __restrict__ grad_loss, float* __restrict__ grad_p) {
  int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= d) return;
  const float mp = mean_p[j], rp = rstd_p[j], mt = mean_t[j], rt = rstd_t[j];
  const float inv_b = 1.f / static_cast<float>(b);
  // w_i: 1/S for the batch reduction (S summed here from the row sums, identical in every thread), 1/(B S_i) per
  // sample.
  float inv_total = 0.f;
  if (!sample_reduction) {
    float s = 0.f;
    for (int64_t i = 0; i < b; ++i) s += row_sum[i];
    inv_total = 1.f / s;
  }
  float sum_g = 0.f, sum_gf = 0.f;
  for (int64_t i = 0; i < b; ++i) {
    float f = (p[i * d + j] - mp) * rp;
    float w = sample_reduction ? inv_b / row_sum[i] : inv_total;
    float g = abs_pow_grad(f - (t[i * d + j] - mt) * rt, alpha) * w;
    sum_g += g;
    sum_gf += g * f;
  }
  const float mean_g = sum_g * inv_b, mean_gf = sum_gf * inv_b;
  const float scale = grad_loss[0] * rp;
  for (int64_t i = 0; i < b; ++i) {
    float f = (p[i * d + j] - mp) * rp;
    float w = sample_reduction ? inv_b / row_sum[i] : inv_total;
    float g = abs_pow_grad(f - (t[i * d + j] - mt) * rt, alpha) * w;
    grad_p[i * d + j] = scale * (g - mean_g - f * mean_gf);
  }
}

}  // namespace

void log_sum_loss_forward(const float* p, const float* t, int64_t b, int64_t d, float alpha, float eps, int teacher_bn,
                          int sample_reduction, float* mean_p, float* rstd_p, float* mean_t, float* rstd_t,
                          float* row_sum, float* loss, cudaStream_t stream) {
  if (b <= 0 || d <= 0) throw std::runtime_error("log_sum_loss_forward: empty input");
  constexpr int kColThreads = 128;
  column_stats_kernel<<<static_cast<unsigned>((d + kColThreads - 1) / kColThreads), kColThreads, 0, stream>>>(
      p, t, b, d, eps, teacher_bn, mean_p, rstd_p, mean_t, rstd_t);
  check_launch("log_sum_loss_forward (column statistics)");
  constexpr int kRowThreads = 256;
  row_power_sums_kernel<kRowThreads>
      <<<static_cast<unsigned>(b), kRowThreads, 0, stream>>>(p, t, d, alpha, mean_p, rstd_p, mean_t, rstd_t, row_sum);
  check_launch("log_sum_loss_forward (row sums)");
  constexpr int kLossThreads = 256;
  finish_loss_kernel<kLossThreads><<<1, kLossThreads, 0, stream>>>(row_sum, b, sample_reduction, loss);
  check_launch("log_sum_loss_forward (loss)");
}

void log_sum_loss_backward(const float* p, const float* t, int64_t b, int64_t d, float alpha, int sample_reduction,
                           const float* mean_p, const float* rstd_p, const float* mean_t, const float* rstd_t,
                           const float* row_sum, const float* grad_loss, float* grad_p, cudaStream_t stream) {
  if (b <= 0 || d <= 0) throw std::runtime_error("log_sum_loss_backward: empty input");
  constexpr int kColThreads = 128;
  backward_kernel<<<static_cast<unsigned>((d + kColThreads - 1) / kColThreads), kColThreads, 0, stream>>>(
      p, t, b, d, alpha, sample_reduction, mean_p, rstd_p, mean_t, rstd_t, row_sum, grad_loss, grad_p);
  check_launch("log_sum_loss_backward");
}

}  // namespace g2l::cuda
