// data/shard_file.cpp — format detection, header checks, the token range scan
// and the mask sidecar for one data file (see shard_file.h).
#include "daemon/worker/data/shard_file.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace accum::data {
namespace {

using accum::v1::DataFormat;

absl::Status data_error(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("data file ", path, ": ", what));
}

int32_t header_word(const io::MappedFile& file, int index) {
  int32_t value;
  std::memcpy(&value, file.data() + index * sizeof(int32_t), sizeof(value));
  return value;
}

bool has_llmc_magic(const io::MappedFile& file) {
  if (file.size() < sizeof(int32_t)) return false;
  int32_t magic = header_word(file, 0);
  return magic == kLlmcMagicU16 || magic == kLlmcMagicU32;
}

// Index of the first token >= limit, or -1. Full blocks have a constant trip
// count, so the max reduction vectorizes even at -O2 (GCC's "very cheap" cost
// model); only a failing block, and the tail, are scanned element by element.
template <typename Token>
int64_t first_token_at_least(const uint8_t* bytes, int64_t count, uint32_t limit) {
  const Token* tokens = reinterpret_cast<const Token*>(bytes);  // mmap'd, suitably aligned
  constexpr int64_t kBlock = 4096;
  int64_t start = 0;
  for (; start + kBlock <= count; start += kBlock) {
    const Token* block = tokens + start;
    Token block_max = 0;
    for (int64_t i = 0; i < kBlock; ++i) block_max = block[i] > block_max ? block[i] : block_max;
    if (block_max < limit) continue;
    for (int64_t i = 0; i < kBlock; ++i)
      if (block[i] >= limit) return start + i;
  }
  for (int64_t i = start; i < count; ++i)
    if (tokens[i] >= limit) return i;
  return -1;
}

absl::Status check_llmc_header(ShardFile* shard) {
  const io::MappedFile& file = *shard->file;
  const std::string& path = shard->path;
  const int64_t size = static_cast<int64_t>(file.size());
  if (size < kLlmcHeaderBytes)
    return data_error(path, absl::StrCat("llm.c shard needs a ", kLlmcHeaderBytes,
                                         "-byte header but the file has ", size, " bytes"));
  const int32_t magic = header_word(file, 0);
  if (magic == kLlmcMagicU16) {
    shard->token_bytes = 2;
  } else if (magic == kLlmcMagicU32) {
    shard->token_bytes = 4;
  } else {
    return data_error(
        path, absl::StrCat("bad magic ", magic, " at byte offset 0; expected ", kLlmcMagicU16,
                           " (uint16 tokens) or ", kLlmcMagicU32, " (uint32 tokens)"));
  }
  const int32_t version = header_word(file, 1);
  if (magic == kLlmcMagicU16 && version != kLlmcVersionU16)
    return data_error(path, absl::StrCat("unsupported llm.c shard version ", version,
                                         " at byte offset 4; expected ", kLlmcVersionU16,
                                         " with magic ", kLlmcMagicU16));
  // Version 1 with the uint32 magic is what this loader's own format note once asked for.
  if (magic == kLlmcMagicU32 && version != kLlmcVersionU32 && version != kLlmcVersionU16)
    return data_error(path, absl::StrCat("unsupported llm.c shard version ", version,
                                         " at byte offset 4; expected ", kLlmcVersionU32, " (or ",
                                         kLlmcVersionU16, ") with magic ", kLlmcMagicU32));
  const int32_t count = header_word(file, 2);
  if (count < 0)
    return data_error(path, absl::StrCat("negative token count ", count, " at byte offset 8"));
  const int64_t expected = kLlmcHeaderBytes + int64_t{count} * shard->token_bytes;
  if (size != expected)
    return data_error(path, absl::StrCat("file has ", size,
                                         " bytes but its header (byte offset 8) "
                                         "says ",
                                         count, " tokens of ", shard->token_bytes,
                                         " bytes: expected ", kLlmcHeaderBytes, " + ", count, " * ",
                                         shard->token_bytes, " = ", expected, " bytes"));
  shard->header_bytes = kLlmcHeaderBytes;
  shard->count = count;
  return absl::OkStatus();
}

absl::Status check_tokens(const ShardFile& shard, int vocab_size) {
  const uint8_t* bytes = shard.file->data() + shard.header_bytes;
  const uint32_t limit = static_cast<uint32_t>(vocab_size);
  int64_t bad = -1;
  switch (shard.token_bytes) {
    case 1:
      if (limit < 256) bad = first_token_at_least<uint8_t>(bytes, shard.count, limit);
      break;
    case 2:
      if (limit < 65536) bad = first_token_at_least<uint16_t>(bytes, shard.count, limit);
      break;
    default:
      bad = first_token_at_least<uint32_t>(bytes, shard.count, limit);
  }
  if (bad < 0) return absl::OkStatus();
  return data_error(shard.path,
                    absl::StrCat("token ", shard.token(bad), " at token index ", bad,
                                 " (byte offset ", shard.header_bytes + bad * shard.token_bytes,
                                 ") is out of range: model.vocab_size is ", vocab_size,
                                 " (tokens must be < vocab_size)"));
}

absl::Status open_mask(ShardFile* shard) {
  const std::string mask_path = shard->path + ".mask";
  auto mask = io::MappedFile::open(mask_path);
  if (!mask.ok()) {
    if (absl::IsNotFound(mask.status()))
      return absl::NotFoundError(absl::StrCat("mask sidecar ", mask_path, " for data file ",
                                              shard->path,
                                              " does not exist (data.use_mask is on)"));
    return mask.status();
  }
  if (static_cast<int64_t>((*mask)->size()) != shard->count)
    return absl::InvalidArgumentError(absl::StrCat(
        "mask sidecar ", mask_path, " has ", (*mask)->size(),
        " bytes; expected one byte per token of ", shard->path, " (", shard->count, " tokens)"));
  shard->mask_file = std::move(*mask);
  return absl::OkStatus();
}

template <typename Token>
void widen(const uint8_t* bytes, int64_t n, int32_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    Token t;
    std::memcpy(&t, bytes + i * sizeof(Token), sizeof(Token));
    out[i] = static_cast<int32_t>(t);
  }
}

}  // namespace

void ShardFile::copy_tokens(int64_t first, int64_t n, int32_t* out) const {
  const uint8_t* bytes = file->data() + header_bytes + first * token_bytes;
  if (token_bytes == 1) {
    widen<uint8_t>(bytes, n, out);
  } else if (token_bytes == 2) {
    widen<uint16_t>(bytes, n, out);
  } else {
    widen<uint32_t>(bytes, n, out);
  }
}

void ShardFile::copy_counted(int64_t first, int64_t n, uint8_t* out) const {
  if (mask_file == nullptr) {
    std::memset(out, 1, static_cast<size_t>(n));
    return;
  }
  const uint8_t* mask = mask_file->data() + first;
  for (int64_t i = 0; i < n; ++i) out[i] = mask[i] != 0 ? 1 : 0;
}

absl::StatusOr<std::unique_ptr<ShardFile>> open_shard(const std::string& path, DataFormat format,
                                                      int vocab_size, bool use_mask) {
  auto shard = std::make_unique<ShardFile>();
  shard->path = path;
  auto file = io::MappedFile::open(path);
  if (!file.ok()) {
    if (absl::IsNotFound(file.status()))
      return absl::NotFoundError(absl::StrCat("data file ", path, " does not exist"));
    return absl::Status(file.status().code(), absl::StrCat("data file ", file.status().message()));
  }
  shard->file = std::move(*file);
  shard->file->advise(MADV_SEQUENTIAL);  // the validation pass reads it front to back

  if (format == accum::v1::AUTO) {
    if (has_llmc_magic(*shard->file)) {  // a short file with the magic is a broken shard
      format = accum::v1::LLMC;
    } else if (absl::EndsWith(path, ".bin")) {
      format = accum::v1::NANOGPT_BIN;
    } else {
      format = accum::v1::TEXT_BYTES;
    }
  }
  shard->format = format;
  const int64_t size = static_cast<int64_t>(shard->file->size());
  switch (format) {
    case accum::v1::LLMC:
      if (absl::Status s = check_llmc_header(shard.get()); !s.ok()) return s;
      break;
    case accum::v1::NANOGPT_BIN:
      if (size % 2 != 0)
        return data_error(path, absl::StrCat("nanoGPT .bin holds uint16 tokens, so its size must "
                                             "be even, but it is ",
                                             size, " bytes"));
      shard->token_bytes = 2;
      shard->count = size / 2;
      break;
    case accum::v1::TEXT_BYTES:
      shard->token_bytes = 1;
      shard->count = size;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("data.format: unknown format ", static_cast<int>(format), " for ", path));
  }
  if (shard->count == 0) return data_error(path, "contains no tokens");
  if (absl::Status s = check_tokens(*shard, vocab_size); !s.ok()) return s;
  shard->file->advise(MADV_NORMAL);  // training reads chunks in any order
  if (use_mask) {
    if (absl::Status s = open_mask(shard.get()); !s.ok()) return s;
  }
  return shard;
}

}  // namespace accum::data
