// Scaled dot-product attention of the ViT blocks (engine-internal): libtorch's SDPA with a process-wide choice of
// which backend it tries first, and a record of the backend that ran.
//
// The preference (KernelOptions::sdpa, g2l/kernels.h: auto|cudnn|flash|efficient|math) is the SDPA backend
// libtorch tries first on CUDA. "auto" keeps libtorch's own order: flash, memory-efficient, math, cuDNN, except that
// libtorch 2.11 puts cuDNN first by itself on sm90 / sm100 GPUs with cuDNN newer than 9.15 (the pip wheel for CUDA 13
// ships 9.19), so on an H200 "auto" is cuDNN. The others move that backend to the front and keep the rest in
// libtorch's order (as torch.nn.attention.sdpa_kernel(..., set_priority=True) does). libtorch keeps that order in
// process-wide state and settles its own default at its first CUDA attention; attend() records that default then and,
// before each CUDA attention, sets the order its caller's model asks for (a vector compare; a copy only when it
// changes). So models with different preferences may run one after the other in one process; two attending at the
// same moment on two threads could see each other's order, so one process runs one preference at a time (the addon
// serialises each Distiller's calls; a process normally holds one run). A backend that does not support the inputs
// (dtype, head size, GPU) is skipped as always; what ran is what attend() records. On the CPU libtorch has its own
// choice (its flash kernel, else math) and the preference has no effect.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <string>

namespace g2l {

/** Whether `name` is an SDPA preference: "auto", "cudnn", "flash", "efficient" or "math". */
bool is_sdpa_preference(const std::string& name);

/** libtorch's name of an SDPA backend code (at::SDPBackend): "flash_attention", "cudnn_attention", ... */
std::string sdpa_backend_name(int code);

/**
 * at::scaled_dot_product_attention(q, k, v) (no mask, no dropout, scale head_dim^-0.5) on (B, heads, T, head_dim)
 * with `preference` first on CUDA (see the top), storing into *ran the backend libtorch picks for these inputs
 * (at::_fused_sdp_choice: the same decision, made from the same arguments, grad mode and priority order).
 */
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::string& preference,
                  std::atomic<int>* ran);

}  // namespace g2l
