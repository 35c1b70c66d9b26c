// g2l engine: which implementation of an operation runs (fused kernels, packed products, the attention backend, the
// FP8 products' details), as typed options of a run rather than environment variables (issue 17).
//
// Each choice computes the same mathematics; they differ by rounding (summation order, where a 16-bit result is
// rounded, FP8 accumulation), so a run records them (lib/distill/config.ts `kernels`, config.json) and a resume uses
// the run's own. The defaults here are lib/defaults.ts KERNEL_DEFAULTS (test/distill/defaults.test.ts holds them
// equal). Each model holds its own copy (VisionTransformerImpl::set_kernels), so two Distillers in one process may
// differ; libtorch's SDPA priority order is process-wide state, which attend() sets to its model's preference before
// each CUDA attention (native/engine/models/attention.h).
#pragma once

#include <string>

namespace g2l {

struct KernelOptions {
  // A student with separate q/k/v weights (the transformers layout) trains with one product of the concatenated
  // weights (fused.h). Same dot products; one cast and one input-gradient product instead of three.
  bool packed_qkv = true;
  // The student's block LayerNorms and LayerScale residuals, and the frozen teacher's residual + LayerNorm, through
  // the fused paths of fused.h (cuda/norm.cu on CUDA). Off until measured to gain (docs/gpu-benchmarks.md).
  bool fused_norm = false;
  // The SwiGLU of the MLPs as one CUDA kernel each way (cuda/swiglu.cu).
  bool fused_swiglu = true;
  // AdamW update: "auto" (libtorch's fused kernel on CUDA, the multi-tensor foreach path on the CPU, which the tests
  // hold against torch.optim.AdamW's default), "on" (fused everywhere), "off" (foreach everywhere).
  std::string fused_adamw = "auto";
  // The SDPA backend libtorch tries first on CUDA: "auto" (libtorch's order), "cudnn", "flash", "efficient", "math".
  // No effect on the CPU, where libtorch makes its own choice (attention.h).
  std::string sdpa = "auto";
  // FP8 teacher (quant.h): activation rows quantised by the fused CUDA kernel where it applies ("cuda") or by at::
  // ops ("aten"); _scaled_mm with use_fast_accum (faster on Hopper, less precise accumulation).
  std::string fp8_quant = "cuda";
  bool fp8_fast_accum = false;
};

/** Throws g2l::Error naming the field and its choices when a string field has another value. */
void validate_kernel_options(const KernelOptions& k);

}  // namespace g2l
