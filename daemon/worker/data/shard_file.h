// data/shard_file.h — one validated, memory-mapped token file of a stream.
//
// Formats (DESIGN.md "Data"):
//   LLMC         256 x int32 header: [0] magic 20240520 (uint16 tokens, [1]
//                version 1) or 20240801 (uint32 tokens, [1] version 7 as llm.c's
//                dev/data writes its Llama 3 shards, or 1), [2] token count;
//                tokens follow at byte 1024; size must be 1024 + count*width.
//   NANOGPT_BIN  raw little-endian uint16 tokens, no header (size must be even).
//   TEXT_BYTES   any file; each byte is a token.
//   AUTO         LLMC when the file starts with one of the two magics, else
//                NANOGPT_BIN for names ending in ".bin", else TEXT_BYTES.
// Opening checks the format, that the file holds at least one token and that
// every token is < vocab_size (one vectorizable pass over the file), and with
// use_mask maps `<file>.mask` (one byte per token). Every error names the file
// and, where there is one, the byte offset and the offending value.
//
// Thread safety: immutable after open; concurrent reads are fine.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "daemon/worker/io/mapped_file.h"
#include "proto/accum.pb.h"

namespace accum::data {

constexpr int32_t kLlmcMagicU16 = 20240520;
constexpr int32_t kLlmcMagicU32 = 20240801;
constexpr int32_t kLlmcVersionU16 = 1;
constexpr int32_t kLlmcVersionU32 = 7;  // llm.c's HEADERS_INFO["llama-3"]
constexpr int64_t kLlmcHeaderBytes = 256 * sizeof(int32_t);

struct ShardFile {
  std::string path;
  accum::v1::DataFormat format = accum::v1::AUTO;  // the format actually used (never AUTO)
  int token_bytes = 0;                             // 1, 2 or 4
  int64_t header_bytes = 0;                        // byte offset of token 0
  int64_t count = 0;                               // tokens in this file
  std::unique_ptr<io::MappedFile> file;
  std::unique_ptr<io::MappedFile> mask_file;  // null without use_mask

  // Token i of this file. REQUIRES: 0 <= i < count.
  uint32_t token(int64_t i) const {
    const uint8_t* p = file->data() + header_bytes + i * token_bytes;
    if (token_bytes == 1) return *p;
    if (token_bytes == 2) {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return v;
    }
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }
  // Whether the target at token position i is counted (mask byte != 0; always
  // true without a sidecar). REQUIRES: 0 <= i < count.
  bool counted(int64_t i) const { return mask_file == nullptr || mask_file->data()[i] != 0; }

  // Bulk forms of token() and counted() for [first, first + n), widened to int32
  // and 0/1. REQUIRES: 0 <= first, first + n <= count.
  void copy_tokens(int64_t first, int64_t n, int32_t* out) const;
  void copy_counted(int64_t first, int64_t n, uint8_t* out) const;
};

// Opens and validates one file. REQUIRES: vocab_size > 0.
absl::StatusOr<std::unique_ptr<ShardFile>> open_shard(const std::string& path,
                                                      accum::v1::DataFormat format, int vocab_size,
                                                      bool use_mask);

}  // namespace accum::data
