// io/safetensors.h — reading and writing safetensors files (8-byte little-endian
// header length, JSON header {name: {dtype, shape, data_offsets}, "__metadata__"},
// then the raw little-endian data). F32 is written; F32, F16 and BF16 are read
// (converted to fp32); tensors of the other safetensors dtypes can be skipped.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
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

// Writes tensors in the given order with metadata (string -> string). The write is
// not atomic by itself (checkpoints use AtomicDir). fsyncs the file before returning.
absl::Status write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                               const std::map<std::string, std::string>& metadata = {});

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

}  // namespace accum::io
