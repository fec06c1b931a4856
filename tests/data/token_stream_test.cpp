// tests/data/token_stream_test.cpp — formats, the order contract of DESIGN.md,
// shuffle, loss masks and path expansion, on files generated per test.
#include "daemon/worker/data/token_stream.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "tests/data/data_files.h"

namespace accum::data {
namespace {

using testing::iota_tokens;
using testing::TempDir;

std::unique_ptr<TokenStream> open_ok(const std::vector<std::string>& paths,
                                     accum::v1::DataFormat format, int vocab, bool mask = false) {
  auto stream = TokenStream::open(paths, format, vocab, mask);
  EXPECT_TRUE(stream.ok()) << stream.status();
  return stream.ok() ? std::move(*stream) : nullptr;
}

// Every token of the stream, read through read_chunk with one chunk of size-1.
std::vector<int32_t> all_tokens(const TokenStream& stream) {
  MicroBatch batch;
  const int span = static_cast<int>(stream.size() - 1);
  stream.read_chunk(0, 1, span, false, 0, &batch);
  std::vector<int32_t> tokens = batch.inputs;
  tokens.push_back(batch.targets.back());
  return tokens;
}

std::vector<int32_t> as_int(const std::vector<uint32_t>& tokens) {
  return std::vector<int32_t>(tokens.begin(), tokens.end());
}

TEST(TokenStreamFormats, LlmcUint16RoundTrip) {
  TempDir dir;
  auto tokens = iota_tokens(40000, 300);  // above int16 range: stored as uint16
  testing::write_llmc(dir.file("a.bin"), tokens);
  auto stream = open_ok({dir.file("a.bin")}, accum::v1::LLMC, 50257);
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(stream->size(), 300);
  EXPECT_EQ(all_tokens(*stream), as_int(tokens));
}

TEST(TokenStreamFormats, LlmcUint32RoundTrip) {
  TempDir dir;
  auto tokens = iota_tokens(70000, 257);  // needs more than 16 bits
  testing::write_llmc(dir.file("a.bin"), tokens, /*wide=*/true);
  auto stream = open_ok({dir.file("a.bin")}, accum::v1::LLMC, 100000);
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(stream->size(), 257);
  EXPECT_EQ(all_tokens(*stream), as_int(tokens));
}

// llm.c's dev/data/data_common.py writes its uint32 (Llama 3) shards with version 7.
TEST(TokenStreamFormats, LlmcUint32ShardOfVersion7AsLlmcWritesItIsRead) {
  TempDir dir;
  auto tokens = iota_tokens(128000, 129);
  testing::write_llmc(dir.file("llama3.bin"), tokens, /*wide=*/true, /*version=*/7);
  auto stream = open_ok({dir.file("llama3.bin")}, accum::v1::AUTO, 128256);
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(stream->size(), 129);
  EXPECT_EQ(all_tokens(*stream), as_int(tokens));
}

TEST(TokenStreamFormats, NanoGptBinRoundTrip) {
  TempDir dir;
  auto tokens = iota_tokens(65000, 500);
  testing::write_nanogpt(dir.file("train.bin"), tokens);
  auto stream = open_ok({dir.file("train.bin")}, accum::v1::NANOGPT_BIN, 65536);
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(stream->size(), 500);
  EXPECT_EQ(all_tokens(*stream), as_int(tokens));
}

TEST(TokenStreamFormats, TextBytesRoundTrip) {
  TempDir dir;
  std::string text = "hello, \xff\x01 world\n";
  testing::write_text(dir.file("corpus.txt"), text);
  auto stream = open_ok({dir.file("corpus.txt")}, accum::v1::TEXT_BYTES, 256);
  ASSERT_NE(stream, nullptr);
  std::vector<int32_t> expected;
  for (unsigned char c : text) expected.push_back(c);
  EXPECT_EQ(all_tokens(*stream), expected);
}

TEST(TokenStreamFormats, AutoDetectsEachFormat) {
  TempDir dir;
  // llm.c magic wins even for a .bin name; a .bin without magic is nanoGPT; else bytes.
  testing::write_llmc(dir.file("shard.bin"), iota_tokens(1000, 10));
  testing::write_nanogpt(dir.file("raw.bin"), iota_tokens(2000, 10));
  testing::write_text(dir.file("notes.txt"), "abc");
  auto llmc = open_ok({dir.file("shard.bin")}, accum::v1::AUTO, 50257);
  auto nano = open_ok({dir.file("raw.bin")}, accum::v1::AUTO, 50257);
  auto text = open_ok({dir.file("notes.txt")}, accum::v1::AUTO, 256);
  ASSERT_TRUE(llmc && nano && text);
  EXPECT_EQ(all_tokens(*llmc), as_int(iota_tokens(1000, 10)));
  EXPECT_EQ(all_tokens(*nano), as_int(iota_tokens(2000, 10)));
  EXPECT_EQ(all_tokens(*text), (std::vector<int32_t>{'a', 'b', 'c'}));
}

TEST(TokenStreamFormats, ExplicitTextBytesReadsAnyFileAsBytes) {
  TempDir dir;
  testing::write_llmc(dir.file("shard.bin"), iota_tokens(0, 4));
  auto stream = open_ok({dir.file("shard.bin")}, accum::v1::TEXT_BYTES, 256);
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(stream->size(), 1024 + 8);  // header + 4 uint16 tokens, one token per byte
}

// A stream whose token at position p is p, split over three files whose sizes
// are not multiples of B*T, so chunks cross file boundaries.
class OrderContract : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::write_llmc(dir_.file("part0.bin"), iota_tokens(0, 37));
    testing::write_nanogpt(dir_.file("part1.bin"), iota_tokens(37, 50));
    testing::write_llmc(dir_.file("part2.bin"), iota_tokens(87, 44), /*wide=*/true);
    stream_ = open_ok({dir_.file("part*.bin")}, accum::v1::AUTO, 1000);
    ASSERT_NE(stream_, nullptr);
    ASSERT_EQ(stream_->size(), 131);
  }
  TempDir dir_;
  std::unique_ptr<TokenStream> stream_;
};

TEST_F(OrderContract, MicroBatchReadsItsOffsetWithWrap) {
  const int B = 2, T = 4, K = 3, N = 2;  // B*T = 8; chunks = floor(130 / 8) = 16
  const int64_t chunks = stream_->chunk_count(int64_t{B} * T);
  ASSERT_EQ(chunks, 16);
  MicroBatch batch;
  for (int64_t s = 0; s < 5; ++s) {  // 5 steps * 6 chunks = 30 chunks: wraps once
    for (int i = 0; i < K; ++i) {
      for (int r = 0; r < N; ++r) {
        const int64_t c = (s * K + i) * N + r;
        int64_t offset = c * B * T;  // DESIGN.md: ((s*K + i)*N + r)*B*T ...
        while (offset + B * T + 1 > stream_->size()) offset -= chunks * B * T;  // ... with wrap
        stream_->read_chunk(c, B, T, /*shuffle=*/false, /*seed=*/1, &batch);
        ASSERT_EQ(batch.inputs.size(), size_t{B * T});
        for (int j = 0; j < B * T; ++j) {
          ASSERT_EQ(batch.inputs[j], offset + j) << "s=" << s << " i=" << i << " r=" << r;
          ASSERT_EQ(batch.targets[j], offset + j + 1) << "s=" << s << " i=" << i << " r=" << r;
        }
        EXPECT_EQ(batch.counted, B * T);
        EXPECT_EQ(stream_->chunk_offset(c, B * T, false, 1), offset);
      }
    }
  }
}

TEST_F(OrderContract, LastChunkEndsExactlyAtStreamEndAndNextWrapsToZero) {
  MicroBatch batch;
  // chunk_tokens 10: chunks = floor(130/10) = 13, the last reads positions 120..130.
  stream_->read_chunk(12, 1, 10, false, 0, &batch);
  EXPECT_EQ(batch.inputs.front(), 120);
  EXPECT_EQ(batch.targets.back(), 130);
  stream_->read_chunk(13, 1, 10, false, 0, &batch);
  EXPECT_EQ(batch.inputs.front(), 0);
}

TEST_F(OrderContract, ShuffleVisitsEveryChunkOncePerEpoch) {
  const int B = 1, T = 8;
  const int64_t chunks = stream_->chunk_count(B * T);
  MicroBatch batch;
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::set<int64_t> offsets;
    for (int64_t k = 0; k < chunks; ++k) {
      stream_->read_chunk(epoch * chunks + k, B, T, /*shuffle=*/true, /*seed=*/42, &batch);
      ASSERT_EQ(batch.inputs[0] % 8, 0);
      for (int j = 0; j < B * T; ++j) ASSERT_EQ(batch.targets[j], batch.inputs[0] + j + 1);
      offsets.insert(batch.inputs[0]);
    }
    EXPECT_EQ(offsets.size(), size_t(chunks)) << "epoch " << epoch << " is not a permutation";
    EXPECT_EQ(*offsets.rbegin(), (chunks - 1) * 8);
  }
}

std::vector<int64_t> shuffled_offsets(const TokenStream& stream, uint64_t seed, int64_t first,
                                      int64_t count) {
  std::vector<int64_t> offsets;
  MicroBatch batch;
  for (int64_t c = first; c < first + count; ++c) {
    stream.read_chunk(c, 1, 8, true, seed, &batch);
    offsets.push_back(batch.inputs[0]);
  }
  return offsets;
}

TEST_F(OrderContract, ShuffleIsReproducibleFromSeedAndDiffersAcrossSeedsAndEpochs) {
  auto again = open_ok({dir_.file("part*.bin")}, accum::v1::AUTO, 1000);
  ASSERT_NE(again, nullptr);
  const int64_t chunks = stream_->chunk_count(8);
  auto epoch0 = shuffled_offsets(*stream_, 42, 0, chunks);
  EXPECT_EQ(epoch0, shuffled_offsets(*again, 42, 0, chunks));  // a fresh stream, same order
  EXPECT_NE(epoch0, shuffled_offsets(*stream_, 43, 0, chunks));
  EXPECT_NE(epoch0, shuffled_offsets(*stream_, 42, chunks, chunks));  // epoch 1
  std::vector<int64_t> sequential(chunks);
  for (int64_t k = 0; k < chunks; ++k) sequential[k] = k * 8;
  EXPECT_NE(epoch0, sequential);
  // Reading out of order (as a resumed run does) gives the same chunk.
  auto tail = shuffled_offsets(*again, 42, 5, 3);
  EXPECT_EQ(tail, std::vector<int64_t>(epoch0.begin() + 5, epoch0.begin() + 8));
}

TEST(TokenStreamMask, TargetCountedIffMaskByteOfTargetPositionIsNonzero) {
  TempDir dir;
  // Two files so the mask lookup crosses a file boundary.
  testing::write_llmc(dir.file("a.bin"), iota_tokens(0, 13));
  testing::write_llmc(dir.file("b.bin"), iota_tokens(13, 20));
  std::vector<uint8_t> mask_a(13), mask_b(20);
  for (int p = 0; p < 33; ++p) (p < 13 ? mask_a[p] : mask_b[p - 13]) = (p % 3 == 0) ? 0 : 7;
  testing::write_bytes(dir.file("a.bin.mask"), mask_a.data(), mask_a.size());
  testing::write_bytes(dir.file("b.bin.mask"), mask_b.data(), mask_b.size());

  auto stream = open_ok({dir.file("a.bin"), dir.file("b.bin")}, accum::v1::LLMC, 100, true);
  ASSERT_NE(stream, nullptr);
  MicroBatch batch;
  const int B = 2, T = 5;  // chunks = floor(32 / 10) = 3
  for (int64_t c = 0; c < 3; ++c) {
    stream->read_chunk(c, B, T, false, 0, &batch);
    int64_t counted = 0;
    for (int j = 0; j < B * T; ++j) {
      const int target_position = static_cast<int>(c * B * T + j + 1);
      ASSERT_EQ(batch.targets[j], target_position);
      const bool expect_counted = target_position % 3 != 0;
      EXPECT_EQ(batch.mask[j], expect_counted ? 1 : 0) << "chunk " << c << " target " << j;
      counted += expect_counted;
    }
    EXPECT_EQ(batch.counted, counted);
    EXPECT_LT(batch.counted, B * T);  // some targets really are masked
  }

  // The same files without use_mask count every target.
  auto unmasked = open_ok({dir.file("a.bin"), dir.file("b.bin")}, accum::v1::LLMC, 100, false);
  ASSERT_NE(unmasked, nullptr);
  unmasked->read_chunk(1, B, T, false, 0, &batch);
  EXPECT_EQ(batch.counted, B * T);
  EXPECT_TRUE(std::all_of(batch.mask.begin(), batch.mask.end(), [](uint8_t m) { return m == 1; }));
}

TEST(ExpandPaths, GlobIsSortedAndSkipsMaskSidecars) {
  TempDir dir;
  for (const char* name : {"shard_002.bin", "shard_000.bin", "shard_010.bin", "shard_001.bin"})
    testing::write_nanogpt(dir.file(name), iota_tokens(0, 4));
  testing::write_text(dir.file("shard_000.bin.mask"), "1111");
  auto files = expand_paths({dir.file("shard_*")});
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(*files,
            (std::vector<std::string>{dir.file("shard_000.bin"), dir.file("shard_001.bin"),
                                      dir.file("shard_002.bin"), dir.file("shard_010.bin")}));
}

TEST(ExpandPaths, ListKeepsItsOrderAndPlainPathsPassThrough) {
  TempDir dir;
  testing::write_text(dir.file("b.txt"), "bb");
  testing::write_text(dir.file("a1.txt"), "a");
  testing::write_text(dir.file("a2.txt"), "a");
  auto files = expand_paths({dir.file("b.txt"), dir.file("a?.txt")});
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(*files,
            (std::vector<std::string>{dir.file("b.txt"), dir.file("a1.txt"), dir.file("a2.txt")}));
  // The stream concatenates in that order.
  auto stream = open_ok({dir.file("b.txt"), dir.file("a?.txt")}, accum::v1::TEXT_BYTES, 256);
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(all_tokens(*stream), (std::vector<int32_t>{'b', 'b', 'a', 'a'}));
  EXPECT_EQ(stream->files(), *files);
}

TEST(ExpandPaths, LiteralNameWithGlobCharactersIsKept) {
  TempDir dir;
  testing::write_text(dir.file("corpus[1].txt"), "x");
  auto files = expand_paths({dir.file("corpus[1].txt")});
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(*files, std::vector<std::string>{dir.file("corpus[1].txt")});
}

TEST(ExpandPaths, PatternMatchingNothingIsNamed) {
  TempDir dir;
  auto files = expand_paths({dir.file("nothing_*.bin")});
  ASSERT_FALSE(files.ok());
  EXPECT_NE(files.status().message().find(dir.file("nothing_*.bin")), std::string::npos)
      << files.status();
  EXPECT_NE(files.status().message().find("matches no file"), std::string::npos);
}

}  // namespace
}  // namespace accum::data
