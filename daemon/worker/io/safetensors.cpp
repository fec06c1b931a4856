// io/safetensors.cpp — safetensors writer (F32) and validating reader (F32, F16,
// BF16 -> fp32; every other dtype is checked for layout and may only be skipped). Both move
// tensor data in pieces (write / pread), so neither holds a file's data beyond what its
// caller asks for.
//
// File layout: u64 little-endian N | N bytes of JSON header | data. The header
// maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end)} with
// offsets relative to the start of the data; "__metadata__" maps strings to
// strings. We pad the header with spaces so the data starts 8-byte aligned (as
// the reference implementation does). The reader checks everything a corrupt or
// hostile file could get wrong before touching the data: header length, JSON,
// dtype, shape, offsets inside the file, bytes == prod(shape) * dtype size, and
// that the tensors tile the data section exactly (contiguous, no gaps, no
// overlap). Host byte order must be little-endian (x86-64, aarch64).
#include "daemon/worker/io/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "daemon/worker/io/json.h"
#include "daemon/worker/io/mapped_file.h"  // open_regular_file

namespace accum::io {
namespace {

static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes little-endian");

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // same limit as the reference reader

absl::Status write_all(int fd, const void* data, size_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    ssize_t n = ::write(fd, p, std::min<size_t>(bytes, 1u << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
    }
    p += n;
    bytes -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// IEEE 754 binary16 -> binary32, exact (subnormals, inf and NaN included).
float half_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1F;
  uint32_t mantissa = h & 0x3FF;
  uint32_t bits;
  if (exponent == 0x1F) {  // inf / NaN
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {  // normal: rebias 15 -> 127
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // signed zero
    bits = sign;
  } else {  // subnormal: value = mantissa * 2^-24, normalize
    int shift = 0;
    while ((mantissa & 0x400) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    mantissa &= 0x3FF;
    bits = sign | (static_cast<uint32_t>(113 - shift) << 23) | (mantissa << 13);
  }
  return std::bit_cast<float>(bits);
}

// Bytes per element of a safetensors dtype; 0 for a name the format does not define.
int dtype_size(const std::string& dtype) {
  if (dtype == "BOOL" || dtype == "U8" || dtype == "I8" || dtype == "F8_E5M2" || dtype == "F8_E4M3")
    return 1;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  return 0;
}

bool converts_to_float(const std::string& dtype) {
  return dtype == "F32" || dtype == "F16" || dtype == "BF16";
}

struct TensorEntry {
  std::string name;
  int dtype_bytes = 0;
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

absl::Status header_error(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("safetensors file ", path, ": ", what));
}

absl::StatusOr<TensorEntry> parse_entry(const std::string& path, const std::string& name,
                                        const Json& info) {
  auto bad = [&](absl::string_view what) {
    return header_error(path, absl::StrCat("tensor '", name, "': ", what));
  };
  if (!info.is_object()) return bad("header entry is not an object");
  TensorEntry entry;
  entry.name = name;
  const Json* dtype = info.find("dtype");
  if (dtype == nullptr || !dtype->is_string()) return bad("missing string field \"dtype\"");
  entry.dtype = dtype->as_string();
  entry.dtype_bytes = dtype_size(entry.dtype);
  if (entry.dtype_bytes == 0) {
    return bad(absl::StrCat("unknown dtype '", entry.dtype, "' (expected a safetensors dtype)"));
  }
  const Json* shape = info.find("shape");
  if (shape == nullptr || !shape->is_array()) return bad("missing array field \"shape\"");
  uint64_t elements = 1;
  for (const Json& dim : shape->as_array()) {
    if (!dim.is_int() || dim.as_int() < 0) return bad("shape entries must be integers >= 0");
    entry.shape.push_back(dim.as_int());
    if (__builtin_mul_overflow(elements, static_cast<uint64_t>(dim.as_int()), &elements))
      return bad("shape product overflows");
  }
  const Json* offsets = info.find("data_offsets");
  if (offsets == nullptr || !offsets->is_array() || offsets->as_array().size() != 2 ||
      !offsets->as_array()[0].is_int() || !offsets->as_array()[1].is_int())
    return bad("\"data_offsets\" must be an array of two integers");
  int64_t begin = offsets->as_array()[0].as_int(), end = offsets->as_array()[1].as_int();
  if (begin < 0 || end < begin)
    return bad(absl::StrCat("data_offsets [", begin, ", ", end, "] are not an increasing range"));
  entry.begin = static_cast<uint64_t>(begin);
  entry.end = static_cast<uint64_t>(end);
  uint64_t expected_bytes = 0;
  if (__builtin_mul_overflow(elements, static_cast<uint64_t>(entry.dtype_bytes), &expected_bytes))
    return bad("byte size overflows");
  if (entry.end - entry.begin != expected_bytes)
    return bad(absl::StrCat("data_offsets [", begin, ", ", end, "] span ", entry.end - entry.begin,
                            " bytes but shape x ", entry.dtype, " needs ", expected_bytes));
  return entry;
}

// pread of exactly `bytes` at `offset`, or an error naming the file (a short read: the file
// shrank since its header was checked).
absl::Status read_exactly(int fd, void* dst, size_t bytes, uint64_t offset,
                          const std::string& path) {
  char* p = static_cast<char*>(dst);
  while (bytes > 0) {
    const ssize_t n = ::pread(fd, p, std::min<size_t>(bytes, 1u << 30), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat(path, ": read failed: ", std::strerror(errno)));
    }
    if (n == 0) {
      return absl::DataLossError(absl::StrCat(path, ": file ends at byte ", offset,
                                              ", before the data its header describes (it was "
                                              "truncated while being read)"));
    }
    p += n;
    bytes -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

float half_bits_to_float(uint16_t raw, bool bf16) {
  return bf16 ? std::bit_cast<float>(static_cast<uint32_t>(raw) << 16) : half_to_float(raw);
}

}  // namespace

SafetensorsReader::~SafetensorsReader() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<std::unique_ptr<SafetensorsReader>> SafetensorsReader::open(
    const std::string& path, const TensorFilter& skip, const HeaderCheck& check) {
  auto opened = open_regular_file(path);
  if (!opened.ok()) return opened.status();
  auto reader = std::unique_ptr<SafetensorsReader>(new SafetensorsReader());
  reader->fd_ = opened->fd;
  reader->path_ = path;
  const uint64_t file_size = opened->size;
  if (file_size < 8)
    return header_error(path, absl::StrCat("file has ", file_size,
                                           " bytes; expected at least the 8-byte header length"));
  uint64_t header_len;
  if (auto s = read_exactly(reader->fd_, &header_len, 8, 0, path); !s.ok()) return s;
  if (header_len > kMaxHeaderBytes || header_len > file_size - 8)
    return header_error(path, absl::StrCat("header length ", header_len, " exceeds the file (",
                                           file_size, " bytes)"));
  std::string header_text(header_len, '\0');
  if (auto s = read_exactly(reader->fd_, header_text.data(), header_len, 8, path); !s.ok())
    return s;
  auto header = parse_json(header_text);
  if (!header.ok())
    return header_error(path,
                        absl::StrCat("header is not valid JSON: ", header.status().message()));
  if (!header->is_object()) return header_error(path, "header is not a JSON object");

  std::vector<TensorEntry> entries;
  for (const auto& [name, info] : header->as_object()) {
    if (name == "__metadata__") {
      if (!info.is_object()) return header_error(path, "\"__metadata__\" is not an object");
      for (const auto& [key, value] : info.as_object()) {
        if (!value.is_string())
          return header_error(
              path, absl::StrCat("\"__metadata__\" value of '", key, "' is not a string"));
        reader->metadata_[key] = value.as_string();
      }
      continue;
    }
    auto entry = parse_entry(path, name, info);
    if (!entry.ok()) return entry.status();
    entries.push_back(std::move(*entry));
  }

  // The tensors must tile [0, data_size) exactly: sorted by begin, each starts
  // where the previous one ended.
  const uint64_t data_size = file_size - 8 - header_len;
  std::vector<const TensorEntry*> by_offset;
  for (const TensorEntry& e : entries) by_offset.push_back(&e);
  std::stable_sort(by_offset.begin(), by_offset.end(),
                   [](const TensorEntry* a, const TensorEntry* b) { return a->begin < b->begin; });
  uint64_t expected_begin = 0;
  const TensorEntry* previous = nullptr;
  for (const TensorEntry* e : by_offset) {
    if (e->end > data_size)
      return header_error(
          path, absl::StrCat("tensor '", e->name, "': data_offsets [", e->begin, ", ", e->end,
                             "] run past the data section (", data_size, " bytes)"));
    if (e->begin != expected_begin)
      return header_error(
          path, absl::StrCat("tensor '", e->name, "' starts at data byte ", e->begin,
                             previous ? absl::StrCat(" but tensor '", previous->name, "' ends at ")
                                      : std::string(" but the first tensor must start at "),
                             expected_begin, " (tensors must be contiguous)"));
    expected_begin = e->end;
    previous = e;
  }
  if (expected_begin != data_size)
    return header_error(path, absl::StrCat("tensors cover ", expected_begin,
                                           " bytes of a data section of ", data_size, " bytes"));

  std::erase_if(entries, [&](const TensorEntry& e) { return skip && skip(e.name); });
  for (const TensorEntry& e : entries) {
    if (!converts_to_float(e.dtype))
      return header_error(path, absl::StrCat("tensor '", e.name, "': unsupported dtype '", e.dtype,
                                             "' (expected F32, F16 or BF16)"));
  }
  for (const TensorEntry& e : entries) reader->shapes_[e.name] = e.shape;
  if (check) {
    if (auto s = check(reader->shapes_); !s.ok()) return s;
  }
  reader->data_start_ = 8 + header_len;
  for (const TensorEntry& e : entries) {
    reader->entries_.emplace(e.name, Entry{e.dtype, e.dtype_bytes, e.begin, e.end});
  }
  return reader;
}

uint64_t SafetensorsReader::elements(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? 0 : (it->second.end - it->second.begin) / it->second.dtype_bytes;
}

absl::Status SafetensorsReader::read(const std::string& name, uint64_t first, uint64_t count,
                                     float* dst) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": no tensor '", name, "' to read"));
  }
  const Entry& e = it->second;
  const uint64_t total = (e.end - e.begin) / e.dtype_bytes;
  if (first > total || count > total - first) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": elements [", first, ", ",
                                                   first + count, ") of tensor '", name,
                                                   "', which has ", total));
  }
  const uint64_t offset = data_start_ + e.begin + first * e.dtype_bytes;
  if (e.dtype == "F32") return read_exactly(fd_, dst, count * sizeof(float), offset, path_);
  // F16 / BF16: through a small buffer of the raw halves.
  constexpr uint64_t kPiece = 1 << 16;
  std::vector<uint16_t> raw(std::min(count, kPiece));
  const bool bf16 = e.dtype == "BF16";
  for (uint64_t done = 0; done < count;) {
    const uint64_t n = std::min(count - done, kPiece);
    if (auto s = read_exactly(fd_, raw.data(), n * 2, offset + done * 2, path_); !s.ok()) return s;
    for (uint64_t i = 0; i < n; ++i) dst[done + i] = half_bits_to_float(raw[i], bf16);
    done += n;
  }
  return absl::OkStatus();
}

absl::Status write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                               const std::map<std::string, std::string>& metadata,
                               const PieceReader& read) {
  Json header = Json::object();
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [key, value] : metadata) meta.set(key, value);
    header.set("__metadata__", std::move(meta));
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  std::vector<uint64_t> bytes_of(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorView& t = tensors[i];
    if (t.name.empty() || t.name == "__metadata__")
      return absl::InvalidArgumentError(absl::StrCat(path, ": invalid tensor name '", t.name, "'"));
    if (!names.insert(t.name).second)
      return absl::InvalidArgumentError(absl::StrCat(path, ": duplicate tensor '", t.name, "'"));
    Json shape = Json::array();
    uint64_t elements = 1;
    for (int64_t dim : t.shape) {
      if (dim < 0)
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": tensor '", t.name, "' has a negative dimension ", dim));
      elements *= static_cast<uint64_t>(dim);
      shape.push_back(dim);
    }
    if (elements > 0 && t.data == nullptr)
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", t.name, "' has no data pointer"));
    bytes_of[i] = elements * sizeof(float);
    Json info = Json::object();
    info.set("dtype", "F32");
    info.set("shape", std::move(shape));
    info.set("data_offsets", Json(Json::Array{Json(offset), Json(offset + bytes_of[i])}));
    header.set(t.name, std::move(info));
    offset += bytes_of[i];
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  uint64_t header_len = header_text.size();

  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return absl::InternalError(absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
  absl::Status status = write_all(fd, &header_len, sizeof(header_len), path);
  if (status.ok()) status = write_all(fd, header_text.data(), header_text.size(), path);
  for (size_t i = 0; status.ok() && i < tensors.size(); ++i) {
    const size_t count = bytes_of[i] / sizeof(float);
    for (size_t first = 0; status.ok() && first < count; first += kWritePieceFloats) {
      const size_t n = std::min(count - first, kWritePieceFloats);
      const float* piece = tensors[i].data + first;
      if (read) piece = read(piece, n);
      status = write_all(fd, piece, n * sizeof(float), path);
    }
  }
  if (status.ok() && ::fsync(fd) != 0)
    status = absl::InternalError(absl::StrCat(path, ": fsync failed: ", std::strerror(errno)));
  if (::close(fd) != 0 && status.ok())
    status = absl::InternalError(absl::StrCat(path, ": close failed: ", std::strerror(errno)));
  return status;
}

absl::StatusOr<SafetensorsFile> read_safetensors(const std::string& path, const TensorFilter& skip,
                                                 const HeaderCheck& check) {
  auto reader = SafetensorsReader::open(path, skip, check);
  if (!reader.ok()) return reader.status();
  SafetensorsFile result;
  result.metadata = (*reader)->metadata();
  for (const auto& [name, shape] : (*reader)->shapes()) {
    Tensor tensor;
    tensor.shape = shape;
    tensor.data.resize((*reader)->elements(name));
    if (auto s = (*reader)->read(name, 0, tensor.data.size(), tensor.data.data()); !s.ok()) {
      return s;
    }
    result.tensors.emplace(name, std::move(tensor));
  }
  return result;
}

}  // namespace accum::io
