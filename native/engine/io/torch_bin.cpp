// See torch_bin.h.
#include "io/torch_bin.h"

#include <torch/serialize.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "g2l/engine.h"
#include "io/torch_archive.h"

namespace g2l {

std::vector<std::pair<std::string, at::Tensor>> read_torch_bin(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in || !std::filesystem::is_regular_file(path))
    throw Error("cannot read " + path + ": check that it exists and is readable");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < 4 || std::memcmp(bytes.data(), "PK\x03\x04", 4) != 0) {
    throw Error(path +
                " is not a zip checkpoint (torch.save before PyTorch 1.6 wrote another format, which is not read): "
                "use the model's safetensors, or re-save the state dict with a current torch.save");
  }
  const ArchiveRecord pkl = check_torch_archive(bytes.data(), bytes.size(), path, "download it again");
  check_pickle_globals(bytes.data() + pkl.offset, pkl.size, path);  // before anything reads the pickle
  c10::IValue value = torch::pickle_load(bytes);
  if (!value.isGenericDict()) throw Error(path + " does not hold a state dict (a dict of tensors)");
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& entry : value.toGenericDict()) {
    if (!entry.key().isString() || !entry.value().isTensor()) {
      throw Error(path + ": the state dict holds a " + entry.value().tagKind() + " under '" +
                  (entry.key().isString() ? entry.key().toStringRef() : std::string("a non-string key")) +
                  "'; a weights file holds tensors only");
    }
    out.emplace_back(entry.key().toStringRef(), entry.value().toTensor().contiguous());
  }
  return out;
}

}  // namespace g2l
