// io/safetensors.h — reading and writing safetensors files (8-byte little-endian
// header length, JSON header {name: {dtype, shape, data_offsets}, "__metadata__"},
// then the raw little-endian data). F32 is written; F32, F16 and BF16 are read
// (converted to fp32); tensors of the other safetensors dtypes can be skipped.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace accum::io {

struct TensorView {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;  // element count = product of shape
};

// Where write_safetensors gets a tensor's data: called with a piece of a TensorView's data
// (`count` <= kWritePieceFloats floats at `data`), it returns host memory holding those
// floats, valid until its next call. With it, TensorView::data may point where the process
// cannot read (a GPU's memory) and the writer needs one piece of host memory, not a copy of
// every tensor. Without it (nullptr), TensorView::data is read directly.
using PieceReader = std::function<const float*(const float* data, size_t count)>;
inline constexpr size_t kWritePieceFloats = size_t{4} << 20;  // 16 MiB

// Writes tensors in the given order with metadata (string -> string). The write is
// not atomic by itself (checkpoints use AtomicDir). fsyncs the file before returning.
absl::Status write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                               const std::map<std::string, std::string>& metadata = {},
                               const PieceReader& read = nullptr);

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Names of tensors a reader does not want (e.g. a model's non-parameter buffers).
using TensorFilter = std::function<bool(const std::string& name)>;

// Reads a whole file; errors name the file and what is wrong (short file, bad
// header JSON, offsets out of range, unsupported dtype). Tensors for which `skip`
// returns true are checked for layout like the others (any safetensors dtype, e.g.
// the BOOL causal-mask buffers older transformers saved) but neither converted nor
// returned.
// Called with the names and shapes of the tensors to be read, once the header is checked and
// before any data is converted: an error from it is read_safetensors' answer. A reader that
// knows what it expects refuses another model's file without reading it.
using HeaderCheck =
    std::function<absl::Status(const std::map<std::string, std::vector<int64_t>>& shapes)>;

absl::StatusOr<SafetensorsFile> read_safetensors(const std::string& path,
                                                 const TensorFilter& skip = nullptr,
                                                 const HeaderCheck& check = nullptr);

// A safetensors file read in pieces: open() checks the header exactly as read_safetensors
// does (same errors, same `skip` and `check`), and read() converts any range of a tensor's
// elements to fp32 straight into the caller's memory (pread). read_safetensors holds every
// tensor at once; checkpoints of a large model are read this way instead, a piece at a time.
class SafetensorsReader {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsReader>> open(
      const std::string& path, const TensorFilter& skip = nullptr,
      const HeaderCheck& check = nullptr);
  ~SafetensorsReader();
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  const std::string& path() const { return path_; }
  // The tensors read() serves (those `skip` left), by name.
  const std::map<std::string, std::vector<int64_t>>& shapes() const { return shapes_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t elements(const std::string& name) const;  // 0 for a name it does not serve

  // Elements [first, first + count) of tensor `name`, as fp32, into dst[0 .. count).
  // INVALID_ARGUMENT for a name it does not serve or a range past the tensor; DATA_LOSS when
  // the file ends early (truncated since open), INTERNAL when the read fails; each names the
  // file.
  absl::Status read(const std::string& name, uint64_t first, uint64_t count, float* dst) const;

 private:
  SafetensorsReader() = default;
  struct Entry {
    std::string dtype;
    int dtype_bytes = 0;
    uint64_t begin = 0, end = 0;  // bytes, relative to the data section
  };
  int fd_ = -1;
  std::string path_;
  uint64_t data_start_ = 0;
  std::map<std::string, std::vector<int64_t>> shapes_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, Entry> entries_;
};

}  // namespace accum::io
