// data/token_stream.cpp — the concatenated token stream over validated shard
// files, and the order contract that maps a global chunk index to an offset.
//
//   chunks = floor((size - 1) / (B*T))           (each chunk needs B*T+1 tokens)
//   no shuffle: offset(c) = (c mod chunks) * B*T
//   shuffle:    offset(c) = perm_e[c mod chunks] * B*T, e = c / chunks,
//               perm_e = chunk_permutation(chunks, seed, e)
// A chunk never runs past the end (offset + B*T + 1 <= size) but may span the
// boundary between two files. The last drawn permutation is cached (one epoch
// is read in a row); a mutex makes that cache safe for concurrent readers.
#include "daemon/worker/data/token_stream.h"

#include <algorithm>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/worker/data/chunk_order.h"
#include "daemon/worker/data/shard_file.h"

namespace accum::data {

struct TokenStream::Impl {
  std::vector<std::unique_ptr<ShardFile>> shards;
  std::vector<std::string> paths;
  std::vector<int64_t> starts;  // starts[f] = stream offset of file f's token 0; back() = size
  bool has_mask = false;

  mutable std::mutex cache_mutex;
  mutable int64_t cached_epoch = -1, cached_chunks = -1;
  mutable uint64_t cached_seed = 0;
  mutable std::vector<int64_t> cached_permutation;

  // The file holding stream position `pos`. REQUIRES: 0 <= pos < size.
  size_t file_of(int64_t pos) const {
    auto it = std::upper_bound(starts.begin(), starts.end(), pos);
    return static_cast<size_t>(it - starts.begin()) - 1;
  }

  int64_t permuted(int64_t index, int64_t chunks, uint64_t seed, int64_t epoch) const {
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cached_epoch != epoch || cached_chunks != chunks || cached_seed != seed) {
      cached_permutation = chunk_permutation(chunks, seed, epoch);
      cached_epoch = epoch;
      cached_chunks = chunks;
      cached_seed = seed;
    }
    return cached_permutation[static_cast<size_t>(index)];
  }
};

TokenStream::TokenStream() : impl_(std::make_unique<Impl>()) {}
TokenStream::~TokenStream() = default;

absl::StatusOr<std::unique_ptr<TokenStream>> TokenStream::open(
    const std::vector<std::string>& paths, accum::v1::DataFormat format, int vocab_size,
    bool use_mask) {
  if (vocab_size <= 0)
    return absl::InvalidArgumentError(
        absl::StrCat("model.vocab_size must be > 0 to read data, got ", vocab_size));
  auto files = expand_paths(paths);
  if (!files.ok()) return files.status();
  auto stream = std::unique_ptr<TokenStream>(new TokenStream());
  Impl& impl = *stream->impl_;
  impl.has_mask = use_mask;
  int64_t total = 0;
  for (const std::string& path : *files) {
    auto shard = open_shard(path, format, vocab_size, use_mask);
    if (!shard.ok()) return shard.status();
    impl.starts.push_back(total);
    total += (*shard)->count;
    impl.shards.push_back(std::move(*shard));
    impl.paths.push_back(path);
  }
  impl.starts.push_back(total);
  return stream;
}

int64_t TokenStream::size() const { return impl_->starts.back(); }

const std::vector<std::string>& TokenStream::files() const { return impl_->paths; }

int64_t TokenStream::chunk_count(int64_t chunk_tokens) const {
  if (chunk_tokens <= 0 || size() < 1) return 0;
  return (size() - 1) / chunk_tokens;
}

absl::Status TokenStream::check_length(int B, int T) const {
  const int64_t needed = int64_t{B} * T + 1;
  if (B > 0 && T > 0 && size() >= needed) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "data stream (", absl::StrJoin(impl_->paths, ", "), ") has ", size(),
      " tokens; one micro-batch needs at least B*T+1 = ", B, "*", T, "+1 = ", needed, " tokens"));
}

int64_t TokenStream::chunk_offset(int64_t chunk, int64_t chunk_tokens, bool shuffle,
                                  uint64_t seed) const {
  const int64_t chunks = chunk_count(chunk_tokens);
  if (chunks <= 0 || chunk < 0) return 0;
  int64_t index = chunk % chunks;
  if (shuffle) index = impl_->permuted(index, chunks, seed, chunk / chunks);
  return index * chunk_tokens;
}

void TokenStream::read_chunk(int64_t chunk, int B, int T, bool shuffle, uint64_t seed,
                             MicroBatch* out) const {
  const int64_t chunk_tokens = int64_t{B} * T;
  out->inputs.assign(static_cast<size_t>(std::max<int64_t>(chunk_tokens, 0)), 0);
  out->targets.assign(out->inputs.size(), 0);
  out->mask.assign(out->inputs.size(), 0);
  out->counted = 0;
  if (chunk_count(chunk_tokens) <= 0 || chunk < 0) return;  // REQUIRES violated: empty batch

  const int64_t offset = chunk_offset(chunk, chunk_tokens, shuffle, seed);
  // Gather the B*T+1 positions [offset, offset + B*T] file by file; position
  // offset+j feeds inputs[j] (j < B*T) and targets[j-1] / mask[j-1] (j >= 1).
  const int64_t span = chunk_tokens + 1;
  std::vector<int32_t> tokens(static_cast<size_t>(span));
  std::vector<uint8_t> counted_flags(static_cast<size_t>(span));
  int64_t done = 0;
  for (size_t f = impl_->file_of(offset); done < span; ++f) {
    const ShardFile& shard = *impl_->shards[f];
    const int64_t local = offset + done - impl_->starts[f];
    const int64_t n = std::min(span - done, shard.count - local);
    shard.copy_tokens(local, n, tokens.data() + done);
    shard.copy_counted(local, n, counted_flags.data() + done);
    done += n;
  }
  std::copy(tokens.begin(), tokens.end() - 1, out->inputs.begin());
  std::copy(tokens.begin() + 1, tokens.end(), out->targets.begin());
  std::copy(counted_flags.begin() + 1, counted_flags.end(), out->mask.begin());
  int64_t counted = 0;
  for (uint8_t flag : out->mask) counted += flag;
  out->counted = counted;
}

}  // namespace accum::data
