// Test and measurement entries of the engine: reference runs the tests hold against PyTorch, numerics checks of the
// fused and FP8 kernels, and the rates the benchmarks divide by. Not part of the engine's API for applications: the
// production addon (native/addon/addon.cpp) exports none of them; native/addon/testing.cpp exports them as the
// separate module g2l_engine_testing.node, which only the tests and benchmarks load (test/helpers/engine-testing.ts).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "g2l/dist.h"
#include "g2l/distill.h"
#include "g2l/engine.h"
#include "g2l/models.h"

namespace g2l {

// ---------------------------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------------------------

/**
 * A training-mode forward as the Distiller runs the student: float32 (N,3,H,W) normalised images, dropout and drop
 * path at the rates `drop`, masks from a generator seeded with `seed` on the model's device (Model::embed never
 * drops). The model's own rates are restored afterwards.
 */
HostTensor embed_train(const Model& model, const HostTensor& images, uint64_t seed, const Regularization& drop);

// ---------------------------------------------------------------------------------------------------------------
// AdamW and schedules
// ---------------------------------------------------------------------------------------------------------------

struct OptimizerTrace {
  std::vector<std::vector<HostTensor>> params;  // after each step, in the order given
  std::vector<ScheduleValues> schedule;         // used at each step
  std::vector<double> grad_norm;                // before clipping
};

/**
 * Runs the engine's AdamW on float32 parameters named by checkpoint keys, with grads[step][i] as the gradient of
 * parameter i at each step: the reference the tests hold against torch.optim.AdamW. fused_adamw: KernelOptions's.
 */
OptimizerTrace run_optimizer(const std::vector<std::string>& names, const std::vector<HostTensor>& params,
                             const std::vector<std::vector<HostTensor>>& grads, const OptimizerConfig& config,
                             const std::string& fused_adamw = "auto");

// ---------------------------------------------------------------------------------------------------------------
// The teacher's FP8 products (native/engine/kernels/quant.h): numerics checks on any device
// ---------------------------------------------------------------------------------------------------------------

struct Fp8QuantResult {
  HostTensor codes;        // (M,K) uint8: the float8_e4m3fn bits
  HostTensor scales;       // (M) float32
  HostTensor dequantized;  // (M,K) float32: codes * scales
};

/**
 * x float32 (M,K), rounded to bfloat16 on `device` (what the teacher's activations are), then quantised per row.
 * mode "aten" (at:: ops), "cuda" (the fused kernel: a CUDA device in a CUDA build) or "auto" (as the teacher does).
 */
Fp8QuantResult fp8_quantize_rows(const HostTensor& x, const std::string& device, const std::string& mode);

/**
 * One FP8 Linear as the teacher runs it: x (M,K), weight (N,K), bias (N) float32 rounded to bfloat16 on `device`,
 * weight quantised per output row -> (M,N) float32. emulate: quantise -> dequantise -> float32 matmul (any device);
 * else _scaled_mm (CUDA, compute capability 8.9+; refused elsewhere), with use_fast_accum when fast_accum
 * (KernelOptions::fp8_fast_accum). N and K multiples of 16.
 */
HostTensor fp8_linear(const HostTensor& x, const HostTensor& weight, const HostTensor& bias, const std::string& device,
                      bool emulate, bool fast_accum = false);

// ---------------------------------------------------------------------------------------------------------------
// Fused kernels against the ops they replace
// ---------------------------------------------------------------------------------------------------------------

/**
 * The fused LayerNorm / LayerScale / residual + LayerNorm paths (native/engine/kernels/fused.h, kernels.fused_norm)
 * against the unfused ops they replace, on random (rows, d) inputs from `seed` on `device`, `dtype` ("bfloat16" or
 * "float16") the 16-bit side; forward and backward. Returns (name, value) pairs: relative errors (norm of the
 * difference over norm of the reference) and, for FP8 rows (bfloat16), the fraction of differing codes and the largest
 * relative scale difference. On the CPU the autograd Functions run their at:: bodies and the residual (CUDA only) is
 * left out.
 */
std::vector<std::pair<std::string, double>> fused_norm_check(const std::string& device, int64_t rows, int64_t d,
                                                             const std::string& dtype, uint64_t seed);

// ---------------------------------------------------------------------------------------------------------------
// Rates the benchmarks measure against
// ---------------------------------------------------------------------------------------------------------------

/**
 * The rate of one large f32 matrix product C[m, n] = A[m, k] · B[n, k]ᵀ on `device` (the peak-rate bound of the
 * kNN search's products): the best of `reps` timed products after one warm-up, in multiply-adds per second.
 */
double matmul_rate(int64_t m, int64_t n, int64_t k, const std::string& device, int64_t reps);

/** What a collective costs here: the median wall time of `repeats` all-reduces of `bytes` float32 bytes. */
struct AllReduceTiming {
  int64_t bytes = 0;
  double median_ms = 0.0;
  double bus_gbps = 0.0;  // NCCL's "bus bandwidth": 2 (N-1)/N bytes / time
};
AllReduceTiming time_all_reduce(DistContext& context, int64_t bytes, int repeats);

}  // namespace g2l
