// PyTorch weight files (pytorch_model.bin: torch.save of a state dict, the zip format of PyTorch >= 1.6) read
// without running their pickle (engine-internal). A pickle is a program: torch.load runs whatever callables it
// names. Here the zip is checked first (torch_archive.h: bounds and CRC-32s), then every global the pickle names is
// checked against what a state dict of tensors needs (torch._utils._rebuild_tensor_v2, torch.<Type>Storage,
// collections.OrderedDict) before libtorch's C++ unpickler, which has no Python to run anything in, reads it.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

namespace g2l {

/**
 * The tensors of a .bin state dict, in the file's order, contiguous on the CPU in their stored dtypes. Throws
 * g2l::Error naming the file: not a zip checkpoint (the legacy pre-1.6 format), damaged, a global outside the
 * allowed ones (naming it; nothing executed), or not a dict of tensors.
 */
std::vector<std::pair<std::string, at::Tensor>> read_torch_bin(const std::string& path);

}  // namespace g2l
