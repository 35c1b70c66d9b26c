// FP8 (E4M3) matrix products for the frozen teacher (engine-internal; issue 8).
//
// Scheme: per-row scales on both sides. A weight W (N,K) is stored as codes Wq (N,K) float8_e4m3fn and a float32
// scale per output row, sw[n] = amax(|W[n,:]|) / 448, so W ~ Wq * sw[:,None]. At forward each activation row
// (token) x (K) is quantised the same way, sx = amax(|x|) / 448. Then
//     y = (xq @ Wq^T) * sx[:,None] * sw[None,:] + b
// which on Hopper / Ada is one at::_scaled_mm with row-wise scales (bf16 output and bias). Elsewhere it can be
// emulated: quantise -> dequantise -> float32 matmul, the same numbers up to the accumulation order (tests on CPU).
//
// Usage:
//   Fp8Linear fc = Fp8Linear::from_weight(w_bf16, b_bf16, Fp8Options{});  // prepare time
//   at::Tensor y = fc.forward(x_bf16);                                      // (...,K) -> (...,N) bf16
//
// How the products run is fixed per layer at prepare time (Fp8Options, from the run's KernelOptions, g2l/kernels.h):
// the activation quantisation (the fused CUDA kernel, cuda/quant.cu, or at:: ops), _scaled_mm's fast accumulation,
// and the emulation, a test hook (DistillerConfig::teacher_fp8_emulate; not a run option). Which kinds of layers get
// FP8 weights is the run's teacherFp8Layers (DistillerConfig::teacher_fp8_layers, default qkv,fc1: the set that kept
// the teacher's features above the 0.999 cosine gate on the H200, docs/gpu-benchmarks.md).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace g2l {

/** Largest finite float8_e4m3fn. */
constexpr double kFp8E4M3Max = 448.0;
/** The smallest row amax a scale is computed from: all-zero rows get codes 0 and a tiny positive scale. */
constexpr double kFp8MinAmax = 1e-12;

/** Row-wise FP8 codes and scales: x (M,K) ~ codes.to(float) * scales, scales (M,1) float32. */
struct Fp8Rows {
  at::Tensor codes;   // (M,K) float8_e4m3fn, contiguous
  at::Tensor scales;  // (M,1) float32, contiguous
};

/**
 * Quantises each row of x (M,K) (float32, float16 or bfloat16, any device). mode "aten": at:: ops; "cuda": the fused
 * kernel, which needs a CUDA bf16 input and a CUDA build (throws otherwise); "auto": the kernel where it applies,
 * else at:: ops.
 */
Fp8Rows quantize_rows_fp8(const at::Tensor& x, const std::string& mode = "auto");

/** codes * scales in float32 (M,K). */
at::Tensor dequantize_rows_fp8(const Fp8Rows& q);

/** Whether `device` has FP8 tensor cores that _scaled_mm can use: "" if yes, else why not (for messages). */
std::string fp8_unsupported_reason(const at::Device& device);

/** Which kinds of a ViT block's Linear layers get FP8 weights. */
struct Fp8LayerSet {
  bool qkv = true;  // fused qkv, or HF query/key/value
  bool proj = false;
  bool fc1 = true;
  bool fc2 = false;
  /** "qkv,proj,fc1,fc2" (the chosen ones). */
  std::string describe() const;
};
/** From names among qkv, proj, fc1, fc2 (DistillerConfig::teacher_fp8_layers); throws Error on other names. */
Fp8LayerSet fp8_layers_from_names(const std::vector<std::string>& names);

/** How an Fp8Linear runs its products (see the top). */
struct Fp8Options {
  /** Activation rows: "cuda" the fused kernel where it applies (a CUDA bf16 input in a CUDA build), "aten" at:: ops. */
  std::string quant = "cuda";
  /** _scaled_mm with use_fast_accum. */
  bool fast_accum = false;
  /** Quantise -> dequantise -> float32 matmul instead of _scaled_mm (any device; a test hook). */
  bool emulate = false;
};

/** One Linear layer with FP8 weights (see the top of this file). */
class Fp8Linear {
 public:
  /** Both dimensions multiples of 16 (_scaled_mm's requirement); layers that do not fit keep their normal linear. */
  static bool fits(const at::Tensor& weight);
  /**
   * Quantises weight (N,K) per output row; bias (N) or undefined. options.emulate: keep the dequantised weight in
   * float32 and compute quantise -> dequantise -> float32 matmul at forward (any device); else _scaled_mm (CUDA,
   * cc 8.9+).
   */
  static Fp8Linear from_weight(const at::Tensor& weight, const at::Tensor& bias, const Fp8Options& options);

  bool defined() const { return codes_.defined(); }
  /** x (...,K) -> (...,N) in x's dtype (bf16 on the CUDA path). */
  at::Tensor forward(const at::Tensor& x) const;
  /**
   * The same from rows already quantised (e.g. by the fused residual + LayerNorm kernel, fused.h): q of an input of
   * `sizes` (...,K) -> (...,N) in out_dtype.
   */
  at::Tensor forward_rows(const Fp8Rows& q, at::IntArrayRef sizes, at::ScalarType out_dtype) const;
  /** Bytes held by the FP8 copy (codes, scales, bias; the emulation's float32 weight too). */
  int64_t bytes() const;

 private:
  at::Tensor codes_;        // (N,K) float8_e4m3fn
  at::Tensor scales_;       // (1,N) float32: _scaled_mm's scale_b layout
  at::Tensor bias_;         // (N) bf16 (CUDA) or float32 (emulation), or undefined
  at::Tensor dequantized_;  // (N,K) float32, emulation only
  Fp8Options options_;
};

}  // namespace g2l
