// io/safetensors.h — reading and writing safetensors files (8-byte little-endian
// header length, JSON header {name: {dtype, shape, data_offsets}, "__metadata__"},
// then the raw little-endian data). F32 is written; F32, F16 and BF16 are read
// (converted to fp32).
#pragma once

#include <cstdint>
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

// Reads a whole file; errors name the file and what is wrong (short file, bad
// header JSON, offsets out of range, unsupported dtype).
absl::StatusOr<SafetensorsFile> read_safetensors(const std::string& path);

}  // namespace accum::io
