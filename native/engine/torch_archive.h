// Checks a PyTorch zip archive (a state.pt written by torch::pickle_save) before libtorch reads it: libtorch's own
// reader trusts the offsets it finds, and a truncated or damaged file can crash the process instead of throwing.
#pragma once

#include <cstddef>
#include <string>

namespace g2l {

/**
 * Throws g2l::Error naming `path` and what is wrong unless `data` is a whole zip archive of stored records whose
 * directory, headers and record bounds lie inside the file, whose CRC-32s match, and which holds a data.pkl record.
 */
void check_torch_archive(const char* data, size_t size, const std::string& path);

}  // namespace g2l
