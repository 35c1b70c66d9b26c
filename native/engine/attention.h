// Scaled dot-product attention of the ViT blocks (engine-internal): libtorch's SDPA with a process-wide choice of
// which backend it tries first, and a record of the backend that ran.
//
// G2L_SDPA=auto|cudnn|flash|efficient|math: the SDPA backend libtorch tries first on CUDA. "auto" (or unset) keeps
// libtorch's own order: flash, memory-efficient, math, cuDNN, except that libtorch 2.11 puts cuDNN first by itself on
// sm90 / sm100 GPUs with cuDNN newer than 9.15 (the pip wheel for CUDA 13 ships 9.19), so on an H200 "auto" is cuDNN.
// The others move that backend to the front and keep the rest in libtorch's order (as
// torch.nn.attention.sdpa_kernel(..., set_priority=True) does). They are applied at the first attention on a CUDA
// device, after libtorch has settled its own default (it does that at its first CUDA attention and would otherwise
// overwrite an order set before). A backend that does not support the inputs (dtype, head size, GPU) is skipped as
// always; what ran is what attend() records. On the CPU libtorch has its own choice (its flash kernel, else math)
// and the preference has no effect. Read once per process; an unknown value is refused (Error) when a model is built.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <string>

namespace g2l {

/** The preference as read from G2L_SDPA: "auto", "cudnn", "flash", "efficient" or "math"; throws Error otherwise. */
const std::string& sdpa_preference();

/** libtorch's name of an SDPA backend code (at::SDPBackend): "flash_attention", "cudnn_attention", ... */
std::string sdpa_backend_name(int code);

/**
 * at::scaled_dot_product_attention(q, k, v) (no mask, no dropout, scale head_dim^-0.5) on (B, heads, T, head_dim),
 * storing into *ran the backend libtorch picks for these inputs (at::_fused_sdp_choice: the same decision, made
 * from the same arguments, grad mode and priority order).
 */
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, std::atomic<int>* ran);

}  // namespace g2l
