// data/token_stream.h — the training and validation token streams.
//
// A stream is the concatenation of its files' tokens, in the order the spec lists
// them (globs expand sorted). Formats (DESIGN.md "Data"): llm.c shards (256 x int32
// header: magic 20240520 uint16 tokens / 20240801 uint32, version 1, token count),
// nanoGPT raw uint16 .bin, TEXT_BYTES (each byte a token). Files are memory-mapped.
// An optional `<file>.mask` sidecar holds one byte per token; a target whose byte is
// 0 is not counted in the loss.
//
// Order contract: micro-batch i of optimizer step s on rank r is global chunk
// c = (s*K + i)*N + r. Without shuffle it reads B*T+1 tokens from offset
// (c mod chunks)*B*T, where chunks = floor((tokens-1) / (B*T)) (so a chunk that
// would run past the end restarts at 0). With shuffle, epoch e = c / chunks uses
// a permutation of the chunk indices drawn from (seed, e).
//
// Thread safety: const methods may be called from several threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/accum.pb.h"

namespace accum::data {

struct MicroBatch {
  std::vector<int32_t> inputs;   // (B, T)
  std::vector<int32_t> targets;  // (B, T)
  std::vector<uint8_t> mask;     // (B, T), 1 = counted; all ones without a sidecar
  int64_t counted = 0;           // number of counted targets
};

class TokenStream {
 public:
  // Opens and validates every file: existence, format, size == header, every
  // token < vocab_size (checked once at open; errors name the file and offset),
  // and mask sidecar length. `paths` are already resolved (absolute or relative to cwd)
  // and may contain glob patterns.
  static absl::StatusOr<std::unique_ptr<TokenStream>> open(const std::vector<std::string>& paths,
                                                           accum::v1::DataFormat format,
                                                           int vocab_size, bool use_mask);
  ~TokenStream();

  int64_t size() const;  // total tokens
  // Number of B*T chunks (floor((size-1)/(B*T))); 0 means the stream is too short.
  int64_t chunk_count(int64_t chunk_tokens) const;
  // OK when the stream holds at least B*T+1 tokens (one micro-batch); otherwise
  // INVALID_ARGUMENT naming the files, the token count and B*T+1.
  absl::Status check_length(int B, int T) const;
  // Fills `out` with the chunk at global chunk index `chunk` per the order contract:
  // inputs[b*T+t] = tok[o + b*T + t], targets[b*T+t] = tok[o + b*T + t + 1],
  // mask[b*T+t] = sidecar byte of the target's position != 0.
  // REQUIRES: chunk >= 0 and chunk_count(B*T) > 0 (check_length(B, T) is OK).
  void read_chunk(int64_t chunk, int B, int T, bool shuffle, uint64_t seed, MicroBatch* out) const;
  // The stream offset o of the chunk's first token (same contract as read_chunk).
  int64_t chunk_offset(int64_t chunk, int64_t chunk_tokens, bool shuffle, uint64_t seed) const;
  const std::vector<std::string>& files() const;

 private:
  TokenStream();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Expands globs and lists to a sorted file list; error when a pattern matches nothing.
absl::StatusOr<std::vector<std::string>> expand_paths(const std::vector<std::string>& patterns);

}  // namespace accum::data
