// safetensors reader (mmap) and writer; see safetensors.h. Every check names the file, and a file cut short names
// the byte where it ends and the byte the header says it should reach, which is what a user needs to decide to
// download it again.
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include "g2l/engine.h"
#include "io/model_json.h"
#include "io/torch_bin.h"

namespace fs = std::filesystem;

namespace g2l {

static const std::map<std::string, std::pair<at::ScalarType, size_t>>& stored_dtypes() {
  static const std::map<std::string, std::pair<at::ScalarType, size_t>> m = {
      {"F64", {at::kDouble, 8}}, {"F32", {at::kFloat, 4}}, {"F16", {at::kHalf, 2}},  {"BF16", {at::kBFloat16, 2}},
      {"I64", {at::kLong, 8}},   {"I32", {at::kInt, 4}},   {"I16", {at::kShort, 2}}, {"I8", {at::kChar, 1}},
      {"U8", {at::kByte, 1}},    {"BOOL", {at::kBool, 1}},
  };
  return m;
}

std::string safetensors_dtype_name(at::ScalarType type) {
  for (const auto& [name, t] : stored_dtypes()) {
    if (t.first == type) return name;
  }
  throw Error(std::string("safetensors: cannot store dtype ") + c10::toString(type));
}

// ---------------------------------------------------------------------------------------------------------------
// CRC-32 (IEEE 802.3, as zip and zlib), slicing by 8 bytes: the checksum of a data section
// ---------------------------------------------------------------------------------------------------------------
namespace {

const std::array<std::array<uint32_t, 256>, 8>& crc_tables() {
  static const auto tables = [] {
    std::array<std::array<uint32_t, 256>, 8> t{};
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; ++n) {
      for (int k = 1; k < 8; ++k) t[k][n] = (t[k - 1][n] >> 8) ^ t[0][t[k - 1][n] & 0xff];
    }
    return t;
  }();
  return tables;
}

std::string crc_hex(uint32_t crc) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", crc);
  return buf;
}

// A JSON number that is a non-negative integer a double holds exactly (shapes and offsets).
bool as_count(const json::Value& v, uint64_t& out) {
  if (!v.is_number()) return false;
  double d = v.as_number();
  if (!(d >= 0) || d > 9007199254740992.0 || std::floor(d) != d) return false;
  out = static_cast<uint64_t>(d);
  return true;
}

}  // namespace

uint32_t crc32_update(uint32_t crc, const unsigned char* p, size_t n) {
  const auto& t = crc_tables();
  uint32_t c = crc ^ 0xffffffffu;
  while (n >= 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    lo ^= c;
    c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^ t[3][hi & 0xff] ^
        t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) c = t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

// ---------------------------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------------------------
SafetensorsFile::SafetensorsFile(const std::string& path, const std::string& advice) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + path + ": " + std::strerror(errno));
  struct stat st{};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error("cannot stat " + path + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + " is not a file: " + advice);
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ < 8) {
    ::close(fd);
    throw Error(path + " is truncated: it ends at byte " + std::to_string(size_) +
                ", before the end of the 8-byte header length: " + advice);
  }
  map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw Error("cannot map " + path + ": " + std::strerror(errno));
  }
  try {
    const auto* bytes = static_cast<const uint8_t*>(map_);
    auto damaged = [&](const std::string& what) {
      return Error(path + ": " + what + ": the file is damaged; " + advice);
    };
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
    if (header_len > 100u * 1024 * 1024) {
      throw Error(path + " is not a safetensors file (its header length field reads " + std::to_string(header_len) +
                  " bytes): check the file, or " + advice);
    }
    if (8 + header_len > size_) {
      throw Error(path + " is truncated: it ends at byte " + std::to_string(size_) + " but its header runs to byte " +
                  std::to_string(8 + header_len) + ": " + advice);
    }
    json::Value header =
        json::parse(std::string(reinterpret_cast<const char*>(bytes + 8), header_len), path + " (safetensors header)");
    if (!header.is_object()) throw damaged("the safetensors header is not a JSON object");
    const uint64_t data_start = 8 + header_len;
    const uint64_t data_len = size_ - data_start;
    for (const auto& [key, v] : header.members()) {
      if (key == "__metadata__") {
        if (!v.is_object()) throw damaged("__metadata__ is not an object of strings");
        for (const auto& [mk, mv] : v.members()) {
          if (!mv.is_string()) throw damaged("__metadata__['" + mk + "'] is not a string");
          metadata_[mk] = mv.as_string();
        }
        continue;
      }
      const json::Value* dt = v.find("dtype");
      const json::Value* shape = v.find("shape");
      const json::Value* offsets = v.find("data_offsets");
      if (!dt || !dt->is_string() || !shape || !shape->is_array() || !offsets || !offsets->is_array() ||
          offsets->items().size() != 2) {
        throw damaged("header entry '" + key + "' lacks dtype, shape or data_offsets");
      }
      auto found = stored_dtypes().find(dt->as_string());
      if (found == stored_dtypes().end()) {
        throw Error(path + ": tensor '" + key + "' has dtype " + dt->as_string() +
                    ", which the engine does not read (F32, F16, BF16 and F64 are read for weights)");
      }
      SafetensorsEntry e;
      e.key = key;
      e.dtype_name = dt->as_string();
      e.dtype = found->second.first;
      uint64_t bytes_needed = found->second.second;
      for (const auto& d : shape->items()) {
        uint64_t n = 0;
        if (!as_count(d, n)) throw damaged("tensor '" + key + "' has a bad shape");
        e.shape.push_back(static_cast<int64_t>(n));
        if (n != 0 && bytes_needed > (uint64_t{1} << 62) / n)
          throw damaged("tensor '" + key + "' has an impossible shape");
        bytes_needed *= n;
      }
      uint64_t begin = 0, end = 0;
      if (!as_count(offsets->items()[0], begin) || !as_count(offsets->items()[1], end) || end < begin) {
        throw damaged("tensor '" + key + "' has bad data_offsets");
      }
      if (end - begin != bytes_needed) {
        throw damaged("tensor '" + key + "' spans " + std::to_string(end - begin) +
                      " bytes but its shape and dtype need " + std::to_string(bytes_needed));
      }
      e.file_begin = data_start + begin;
      e.file_end = data_start + end;
      entries_.emplace(key, std::move(e));
    }
    // The tensors in file order must tile the data section: each begins where the one before ends.
    std::vector<const SafetensorsEntry*> order;
    for (const auto& [k, e] : entries_) order.push_back(&e);
    std::sort(order.begin(), order.end(), [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
      return a->file_begin != b->file_begin ? a->file_begin < b->file_begin : a->file_end < b->file_end;
    });
    const uint64_t needed_end = order.empty() ? data_start : order.back()->file_end;
    if (needed_end > size_) {
      // Name the first tensor the cut reaches, so the message says what is lost, not only where.
      const SafetensorsEntry* first_cut = nullptr;
      for (const SafetensorsEntry* e : order) {
        if (e->file_end > size_) {
          first_cut = e;
          break;
        }
      }
      throw Error(path + " is truncated: the file ends at byte " + std::to_string(size_) +
                  " but its header says the data runs to byte " + std::to_string(needed_end) + " (tensor '" +
                  first_cut->key + "' needs bytes " + std::to_string(first_cut->file_begin) + " to " +
                  std::to_string(first_cut->file_end) + "): " + advice);
    }
    uint64_t at = data_start;
    for (const SafetensorsEntry* e : order) {
      if (e->file_begin != at) {
        throw damaged("tensor '" + e->key + "' begins at data byte " + std::to_string(e->file_begin - data_start) +
                      (e->file_begin < at ? ", inside the tensor before it" : ", after a gap") + " (expected " +
                      std::to_string(at - data_start) + ")");
      }
      at = e->file_end;
    }
    if (at != size_) {
      throw damaged(std::to_string(size_ - at) + " bytes follow the last tensor (the header accounts for " +
                    std::to_string(at - data_start) + " of the " + std::to_string(data_len) + " data bytes)");
    }
    auto sum = metadata_.find(kSafetensorsChecksumKey);
    if (sum != metadata_.end()) {
      const std::string actual = crc_hex(crc32_update(0, bytes + data_start, data_len));
      if (sum->second != actual) {
        throw damaged("its data does not match the CRC-32 in its header (" + sum->second + ", computed " + actual +
                      ")");
      }
    }
  } catch (...) {
    ::munmap(map_, size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, size_);
}

at::Tensor SafetensorsFile::view(const SafetensorsEntry& e) const {
  void* p = static_cast<uint8_t*>(map_) + e.file_begin;
  // The map is read-only: the view is only ever a copy source.
  return at::from_blob(p, e.shape, at::TensorOptions().dtype(e.dtype));
}

WeightFiles WeightFiles::open(const std::string& folder) {
  WeightFiles w;
  fs::path dir(folder);
  fs::path single = dir / "model.safetensors";
  fs::path index = dir / "model.safetensors.index.json";
  auto add = [&w](const std::shared_ptr<SafetensorsFile>& f, const std::string* only = nullptr) {
    for (const auto& [k, e] : f->entries()) {
      if (only && k != *only) continue;
      w.entries_[k] = {&e, f.get()};
    }
  };
  if (fs::exists(single)) {
    auto f = std::make_shared<SafetensorsFile>(single.string());
    w.files_.push_back(f);
    add(f);
    w.describe_ = single.string();
    return w;
  }
  if (fs::exists(index)) {
    json::Value idx = json::parse_file(index.string());
    const json::Value* map = idx.find("weight_map");
    if (!map || !map->is_object()) throw Error(index.string() + " has no \"weight_map\" object: the index is damaged");
    std::map<std::string, std::shared_ptr<SafetensorsFile>> shards;
    for (const auto& [key, file] : map->members()) {
      if (!file.is_string()) throw Error(index.string() + ": weight_map['" + key + "'] is not a file name");
      auto it = shards.find(file.as_string());
      if (it == shards.end()) {
        fs::path shard = dir / file.as_string();
        if (!fs::exists(shard)) {
          throw Error(index.string() + " lists shard " + file.as_string() + ", which is not in " + folder +
                      ": download it");
        }
        it = shards.emplace(file.as_string(), std::make_shared<SafetensorsFile>(shard.string())).first;
        w.files_.push_back(it->second);
      }
      auto e = it->second->entries().find(key);
      if (e == it->second->entries().end()) {
        throw Error(index.string() + " places '" + key + "' in " + file.as_string() +
                    ", which does not hold it: the index and shards disagree");
      }
      w.entries_[key] = {&e->second, it->second.get()};
    }
    w.describe_ = std::to_string(shards.size()) + " shard(s) of " + index.string();
    return w;
  }
  // PyTorch checkpoints: the same keys and strict checks, read without running the pickle (torch_bin.h).
  fs::path bin = dir / "pytorch_model.bin";
  fs::path bin_index = dir / "pytorch_model.bin.index.json";
  auto add_bin = [&w](const std::string& file, const std::function<bool(const std::string&)>& wanted) {
    for (auto& [key, t] : read_torch_bin(file)) {
      if (!wanted(key)) continue;
      SafetensorsEntry e;
      e.key = key;
      e.dtype = t.scalar_type();
      e.dtype_name = c10::toString(t.scalar_type());
      e.shape = t.sizes().vec();
      w.bin_tensors_[key] = t;
      w.bin_entries_[key] = std::move(e);
    }
  };
  if (fs::exists(bin)) {
    add_bin(bin.string(), [](const std::string&) { return true; });
  } else if (fs::exists(bin_index)) {
    json::Value idx = json::parse_file(bin_index.string());
    const json::Value* map = idx.find("weight_map");
    if (!map || !map->is_object())
      throw Error(bin_index.string() + " has no \"weight_map\" object: the index is damaged");
    std::map<std::string, std::set<std::string>> shards;  // shard -> the keys the index places in it
    for (const auto& [key, file] : map->members()) {
      if (!file.is_string()) throw Error(bin_index.string() + ": weight_map['" + key + "'] is not a file name");
      shards[file.as_string()].insert(key);
    }
    for (const auto& [file, keys] : shards) {
      fs::path shard = dir / file;
      if (!fs::exists(shard))
        throw Error(bin_index.string() + " lists shard " + file + ", which is not in " + folder + ": download it");
      add_bin(shard.string(), [&keys = keys](const std::string& k) { return keys.count(k) > 0; });
      for (const auto& k : keys) {
        if (!w.bin_entries_.count(k)) {
          throw Error(bin_index.string() + " places '" + k + "' in " + file +
                      ", which does not hold it: the index and shards disagree");
        }
      }
    }
  } else {
    throw Error("no weights in " + folder +
                ": expected model.safetensors, model.safetensors.index.json, pytorch_model.bin or "
                "pytorch_model.bin.index.json");
  }
  for (const auto& [k, e] : w.bin_entries_) w.entries_[k] = {&e, nullptr};
  w.describe_ = fs::exists(bin) ? bin.string() : "the shards of " + bin_index.string();
  return w;
}

at::Tensor WeightFiles::view(const std::string& key) const {
  auto it = entries_.find(key);
  if (it == entries_.end()) throw Error("weights: no tensor '" + key + "' in " + describe_);
  if (!it->second.second) return bin_tensors_.at(key);
  return it->second.second->view(*it->second.first);
}

std::string WeightFiles::describe() const { return describe_; }

// ---------------------------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------------------------
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata, bool checksum) {
  std::vector<std::pair<std::string, at::Tensor>> sorted = tensors;
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<at::Tensor> host;
  for (const auto& [key, t] : sorted) host.push_back(t.detach().to(at::kCPU).contiguous());
  std::map<std::string, std::string> meta_strings = metadata;
  if (checksum) {
    uint32_t crc = 0;
    for (const at::Tensor& h : host)
      crc = crc32_update(crc, static_cast<const unsigned char*>(h.data_ptr()), h.nbytes());
    meta_strings[kSafetensorsChecksumKey] = crc_hex(crc);
  }
  json::Value header = json::Value::object();
  if (!meta_strings.empty()) {
    json::Value meta = json::Value::object();
    for (const auto& [k, v] : meta_strings) meta.set(k, json::Value::string(v));
    header.set("__metadata__", std::move(meta));
  }
  uint64_t offset = 0;
  for (size_t i = 0; i < sorted.size(); ++i) {
    const std::string& key = sorted[i].first;
    const at::Tensor& h = host[i];
    json::Value entry = json::Value::object();
    entry.set("dtype", json::Value::string(safetensors_dtype_name(h.scalar_type())));
    json::Value shape = json::Value::array();
    for (int64_t d : h.sizes()) shape.items().push_back(json::Value::number(static_cast<double>(d)));
    entry.set("shape", std::move(shape));
    uint64_t n = h.nbytes();
    entry.set("data_offsets", json::Value::array({json::Value::number(static_cast<double>(offset)),
                                                  json::Value::number(static_cast<double>(offset + n))}));
    header.set(key, std::move(entry));
    offset += n;
  }
  std::string text = header.dump();
  // Pad with spaces so that the data section starts 8-byte aligned, as the reference writer does.
  while ((8 + text.size()) % 8 != 0) text += ' ';
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw Error("cannot write " + path + ": check that the folder is writable");
  uint64_t len = text.size();
  char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<char>((len >> (8 * i)) & 0xFF);
  out.write(len_bytes, 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const at::Tensor& h : host) {
    out.write(static_cast<const char*>(h.data_ptr()), static_cast<std::streamsize>(h.nbytes()));
  }
  out.flush();
  if (!out) throw Error("writing " + path + " failed (disk full?)");
}

}  // namespace g2l
