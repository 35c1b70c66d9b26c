// See torch_archive.h. The zip layout as PyTorch writes it: stored (uncompressed) records, each with a local header,
// then the central directory and its end record (zip64 records when sizes or offsets pass 4 GB). Every offset is
// checked against the file's size before it is followed; every record's CRC-32 is compared with the directory's.
#include "io/torch_archive.h"
#include "io/safetensors.h"

#include <array>
#include <cstdint>
#include <cstring>

#include <c10/util/StringUtil.h>

#include "g2l/engine.h"

namespace g2l {

namespace {

uint16_t u16(const char* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
uint32_t u32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t u64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace

ArchiveRecord check_torch_archive(const char* data, size_t size, const std::string& path, const std::string& remedy) {
  auto damaged = [&](const std::string& what) { return Error(path + " is damaged (" + what + "): " + remedy); };
  // [offset, offset + length) inside the file, without overflow.
  auto inside = [&](uint64_t offset, uint64_t length) { return offset <= size && length <= size - offset; };

  if (size < 22) throw damaged("it has " + std::to_string(size) + " bytes, too few for a zip archive");
  // The end-of-central-directory record: within the last 64 KiB + 22 bytes, its comment running to the end.
  int64_t eocd = -1;
  const size_t lowest = size > 65557 ? size - 65557 : 0;
  for (size_t i = size - 22 + 1; i-- > lowest;) {
    if (u32(data + i) == 0x06054b50u && i + 22 + u16(data + i + 20) == size) {
      eocd = static_cast<int64_t>(i);
      break;
    }
  }
  if (eocd < 0) throw damaged("no zip directory at its end: truncated, or not a checkpoint");
  const char* end = data + eocd;
  uint64_t count = u16(end + 10);
  uint64_t dir_size = u32(end + 12);
  uint64_t dir_offset = u32(end + 16);
  uint64_t dir_limit = static_cast<uint64_t>(eocd);
  if (count == 0xffff || dir_size == 0xffffffffu || dir_offset == 0xffffffffu) {
    if (eocd < 20 || u32(end - 20) != 0x07064b50u) throw damaged("no zip64 locator before the directory's end record");
    const uint64_t z64 = u64(end - 20 + 8);
    if (!inside(z64, 56) || u32(data + z64) != 0x06064b50u)
      throw damaged("the zip64 end record is outside the file or broken");
    count = u64(data + z64 + 32);
    dir_size = u64(data + z64 + 40);
    dir_offset = u64(data + z64 + 48);
    dir_limit = z64;
  }
  if (dir_offset > dir_limit || dir_size > dir_limit - dir_offset) {
    throw damaged("its directory at byte " + std::to_string(dir_offset) + " runs past byte " +
                  std::to_string(dir_limit));
  }
  if (count > dir_size / 46)
    throw damaged("its directory lists " + std::to_string(count) + " records, more than fit in it");

  bool has_pickle = false;
  ArchiveRecord pickle;
  uint64_t p = dir_offset;
  const uint64_t dir_end = dir_offset + dir_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (p + 46 > dir_end || u32(data + p) != 0x02014b50u)
      throw damaged("directory entry " + std::to_string(i) + " is broken");
    const char* h = data + p;
    const uint16_t method = u16(h + 10);
    const uint32_t crc = u32(h + 16);
    uint64_t packed = u32(h + 20), stored = u32(h + 24), local = u32(h + 42);
    const uint64_t name_len = u16(h + 28), extra_len = u16(h + 30), comment_len = u16(h + 32);
    if (p + 46 + name_len + extra_len + comment_len > dir_end)
      throw damaged("directory entry " + std::to_string(i) + " runs past the directory");
    const std::string name(h + 46, name_len);
    // zip64 extra field: the sizes and offset that do not fit 32 bits, in this order.
    const char* x = h + 46 + name_len;
    for (uint64_t e = 0; e + 4 <= extra_len;) {
      const uint16_t id = u16(x + e), len = u16(x + e + 2);
      if (e + 4 + len > extra_len) throw damaged("record " + name + " has a broken extra field");
      if (id == 0x0001) {
        uint64_t q = e + 4;
        auto next = [&](uint64_t& v) {
          if (v != 0xffffffffu) return;
          if (q + 8 > e + 4 + len) throw damaged("record " + name + " has a short zip64 field");
          v = u64(x + q);
          q += 8;
        };
        next(stored);
        next(packed);
        next(local);
      }
      e += 4 + len;
    }
    if (method != 0 || packed != stored)
      throw damaged("record " + name + " is compressed; checkpoints are stored uncompressed");
    if (!inside(local, 30) || u32(data + local) != 0x04034b50u)
      throw damaged("record " + name + " has no local header at byte " + std::to_string(local));
    const uint64_t start = local + 30 + u16(data + local + 26) + u16(data + local + 28);
    if (start > dir_offset || stored > dir_offset - start) {
      throw damaged("record " + name + " runs from byte " + std::to_string(start) + " past the data's end at byte " +
                    std::to_string(dir_offset));
    }
    if (crc32_update(0, reinterpret_cast<const unsigned char*>(data + start), stored) != crc) {
      throw damaged("record " + name + " does not match its CRC-32");
    }
    if (name.size() >= 9 && name.compare(name.size() - 9, 9, "/data.pkl") == 0) {
      has_pickle = true;
      pickle = {static_cast<size_t>(start), static_cast<size_t>(stored)};
    }
    p += 46 + name_len + extra_len + comment_len;
  }
  if (!has_pickle) throw damaged("no data.pkl record: not a PyTorch checkpoint");
  return pickle;
}

void check_pickle_globals(const char* data, size_t size, const std::string& path) {
  auto refuse = [&](const std::string& what) {
    return Error(path + ": " + what +
                 "; refused without running anything (a weights file needs only "
                 "torch._utils._rebuild_tensor_v2, torch.*Storage and collections.OrderedDict): use the model's "
                 "safetensors, or convert the file with code you trust");
  };
  auto damaged = [&](size_t at) {
    return Error(path + " is damaged (its pickle ends inside the opcode at byte " + std::to_string(at) +
                 "): download it again");
  };
  auto allowed = [](const std::string& module, const std::string& name) {
    if (module == "collections" && name == "OrderedDict") return true;
    if (module == "torch._utils" && name == "_rebuild_tensor_v2") return true;
    // torch.FloatStorage, torch.HalfStorage, torch.BFloat16Storage, ...: names of storage types, as a persistent id
    // carries them; never called.
    return module == "torch" && name.size() > 7 && name.compare(name.size() - 7, 7, "Storage") == 0 &&
           name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") ==
               std::string::npos;
  };
  const auto* b = reinterpret_cast<const unsigned char*>(data);
  size_t p = 0;
  auto need = [&](size_t n, size_t at) {
    if (n > size - p) throw damaged(at);
  };
  auto line = [&](size_t at) {
    const void* nl = std::memchr(data + p, '\n', size - p);
    if (!nl) throw damaged(at);
    std::string s(data + p, static_cast<const char*>(nl) - (data + p));
    p = static_cast<const char*>(nl) - data + 1;
    return s;
  };
  // The last two strings pushed, for STACK_GLOBAL (protocol 4), which takes its module and name from the stack.
  std::string last[2];
  int strings = 0;
  auto pushed = [&](std::string s) {
    last[0] = std::move(last[1]);
    last[1] = std::move(s);
    strings = strings < 2 ? strings + 1 : 2;
  };
  while (p < size) {
    const size_t at = p;
    const unsigned char op = b[p++];
    bool keeps_strings = false;
    switch (op) {
      // no argument
      case '(':
      case ')':
      case ']':
      case '}':
      case 'N':
      case 0x88:
      case 0x89:
      case 't':
      case 0x85:
      case 0x86:
      case 0x87:
      case 'R':
      case 'b':
      case 's':
      case 'u':
      case 'a':
      case 'e':
      case 'l':
      case 'd':
      case '0':
      case '1':
      case '2':
      case 'Q':
      case 0x81:
      case 0x92:
      case 0x90:
      case 0x91:
      case 0x97:
      case 0x98:
        break;
      case 0x94:  // MEMOIZE
        keeps_strings = true;
        break;
      case '.':  // STOP
        return;
      // fixed-size arguments
      case 0x80:
      case 'K':
      case 'q':
      case 'h':
        need(1, at);
        p += 1;
        keeps_strings = op == 'q' || op == 0x80;
        break;
      case 'M':
        need(2, at);
        p += 2;
        break;
      case 'J':
      case 'r':
      case 'j':
        need(4, at);
        p += 4;
        keeps_strings = op == 'r';
        break;
      case 'G':
        need(8, at);
        p += 8;
        break;
      case 0x95:
        need(8, at);
        p += 8;
        keeps_strings = true;
        break;  // FRAME
      // length-prefixed arguments
      case 0x8a: {
        need(1, at);
        const size_t n = b[p];
        p += 1;
        need(n, at);
        p += n;
        break;
      }  // LONG1
      case 'C': {
        need(1, at);
        const size_t n = b[p];
        p += 1;
        need(n, at);
        p += n;
        break;
      }  // SHORT_BINBYTES
      case 'U':
      case 0x8c: {  // SHORT_BINSTRING, SHORT_BINUNICODE
        need(1, at);
        const size_t n = b[p];
        p += 1;
        need(n, at);
        pushed(std::string(data + p, n));
        p += n;
        keeps_strings = true;
        break;
      }
      case 'T':
      case 'X':
      case 'B':
      case 0x8b: {  // BINSTRING, BINUNICODE, BINBYTES, LONG4
        need(4, at);
        uint32_t n;
        std::memcpy(&n, data + p, 4);
        p += 4;
        need(n, at);
        if (op == 'T' || op == 'X') pushed(std::string(data + p, n)), keeps_strings = true;
        p += n;
        break;
      }
      case 0x8d:
      case 0x8e:
      case 0x96: {  // BINUNICODE8, BINBYTES8, BYTEARRAY8
        need(8, at);
        uint64_t n;
        std::memcpy(&n, data + p, 8);
        p += 8;
        need(n, at);
        if (op == 0x8d) pushed(std::string(data + p, n)), keeps_strings = true;
        p += n;
        break;
      }
      // newline-terminated arguments
      case 'I':
      case 'L':
      case 'F':
      case 'S':
      case 'V':
      case 'P':
      case 'g':
      case 'p':
        line(at);
        keeps_strings = op == 'p';
        break;
      case 'c': {  // GLOBAL module \n name \n
        const std::string module = line(at);
        const std::string name = line(at);
        if (!allowed(module, name)) throw refuse("its pickle names the global " + module + "." + name);
        break;
      }
      case 0x93:  // STACK_GLOBAL
        if (strings < 2) throw refuse("its pickle builds a global name at run time (STACK_GLOBAL)");
        if (!allowed(last[0], last[1])) throw refuse("its pickle names the global " + last[0] + "." + last[1]);
        break;
      case 'i':
        throw refuse("its pickle instantiates a class (INST " + line(at) + ")");
      case 'o':
        throw refuse("its pickle instantiates a class (OBJ)");
      case 0x82:
      case 0x83:
      case 0x84:
        throw refuse("its pickle uses the copyreg extension registry");
      default:
        throw refuse("its pickle has opcode 0x" + c10::str(std::hex, static_cast<int>(op)) + " at byte " +
                     std::to_string(at) + ", which a tensor state dict never has");
    }
    if (!keeps_strings) strings = 0;
  }
  throw damaged(size);
}

}  // namespace g2l
