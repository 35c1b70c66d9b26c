// Checks a PyTorch zip archive (a state.pt written by torch::pickle_save) before libtorch reads it: libtorch's own
// reader trusts the offsets it finds, and a truncated or damaged file can crash the process instead of throwing.
#pragma once

#include <cstddef>
#include <string>

namespace g2l {

/**
 * Throws g2l::Error naming `path` and what is wrong unless `data` is a whole zip archive of stored records whose
 * directory, headers and record bounds lie inside the file, whose CRC-32s match, and which holds a data.pkl record;
 * `remedy` ends the message (what the user should do). Returns where the data.pkl record's bytes lie.
 */
struct ArchiveRecord {
  size_t offset = 0;
  size_t size = 0;
};
ArchiveRecord check_torch_archive(const char* data, size_t size, const std::string& path,
                                  const std::string& remedy = "resume from an earlier checkpoint");

/**
 * Walks a pickle's opcodes without running any and throws g2l::Error naming `path` and the first global it names
 * that is not one a tensor state dict needs (torch._utils._rebuild_tensor_v2, torch.<Type>Storage,
 * collections.OrderedDict), or an opcode such a pickle never has (INST, OBJ, extension codes). Nothing is executed.
 */
void check_pickle_globals(const char* data, size_t size, const std::string& path);

}  // namespace g2l
