// safetensors files: read by mmap, written in one pass (engine-internal).
//
// Format (https://github.com/huggingface/safetensors): 8-byte little-endian header length N, N bytes of JSON
// {"key": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {...}}, then the data
// section, offsets relative to its start. A model folder holds model.safetensors, or shards listed by
// model.safetensors.index.json {"weight_map": {"key": "model-00001-of-00003.safetensors", ...}}.
// The header is validated as the reference library does (integer shapes and offsets, shape x dtype size = byte
// length, the tensors tile the data section exactly: no overlap, no gap, nothing after the last). Files written with
// a checksum (checkpoints) carry `data_crc32` in __metadata__: the CRC-32 of the data section as 8 lowercase hex
// digits, verified on open.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace g2l {

struct SafetensorsEntry {
  std::string key;
  std::string dtype_name;  // as stored: "F32", "F16", "BF16"...
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> shape;
  uint64_t file_begin = 0;  // absolute byte offsets in the file
  uint64_t file_end = 0;
};

/** The __metadata__ key of the data section's CRC-32 (8 lowercase hex digits). */
inline constexpr const char* kSafetensorsChecksumKey = "data_crc32";

// CRC-32 (IEEE, as zip and zlib.crc32), continued from `crc` (0 to start) over n bytes; slicing by 8.
uint32_t crc32_update(uint32_t crc, const unsigned char* p, size_t n);

/** One safetensors file, memory-mapped read-only; header, sizes and checksum (when present) validated on open. */
class SafetensorsFile {
 public:
  /** `advice`: what a message about a damaged file tells the user to do (weights: download them again). */
  explicit SafetensorsFile(const std::string& path, const std::string& advice = "download it again");
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /** Whether the file carries a data checksum (it matched: the constructor verified it). */
  bool has_checksum() const { return metadata_.count(kSafetensorsChecksumKey) > 0; }

  /** A CPU tensor over the mapped bytes (no copy), valid while this file is open. */
  at::Tensor view(const SafetensorsEntry& entry) const;

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

/**
 * The weights of a model folder: model.safetensors, or the shards of model.safetensors.index.json; else
 * pytorch_model.bin or the shards of pytorch_model.bin.index.json, read by torch_bin.h (tensors only, nothing
 * executed). safetensors wins where a folder has both.
 */
class WeightFiles {
 public:
  /** Opens the folder's weights; throws g2l::Error naming the folder when there are none or they are damaged. */
  static WeightFiles open(const std::string& folder);

  /** key -> (entry, file it lives in; null for a tensor read from a .bin). */
  const std::map<std::string, std::pair<const SafetensorsEntry*, const SafetensorsFile*>>& entries() const {
    return entries_;
  }
  at::Tensor view(const std::string& key) const;
  std::string describe() const;  // "model.safetensors" or "3 shards of model.safetensors.index.json"

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, SafetensorsEntry> bin_entries_;  // .bin: the tensors' keys, dtypes and shapes
  std::map<std::string, at::Tensor> bin_tensors_;        // .bin: the tensors, read into memory
  std::map<std::string, std::pair<const SafetensorsEntry*, const SafetensorsFile*>> entries_;
  std::string describe_;
};

/** safetensors dtype name for a torch dtype ("F32", "F16", "BF16", ...). */
std::string safetensors_dtype_name(at::ScalarType type);

/**
 * Writes tensors (any device, any of the supported dtypes; written as they are) to `path` in key order, with the
 * given string metadata, plus the data section's CRC-32 when `checksum`. The caller makes it atomic (writes into a
 * temporary file or folder and renames it).
 */
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}}, bool checksum = false);

}  // namespace g2l
