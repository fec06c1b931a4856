// tests/data/data_errors_test.cpp — every way a data file can be wrong is
// refused at open, and the message names the file (and the offset and value
// where there is one).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <future>

#include "daemon/worker/data/token_stream.h"
#include "tests/data/data_files.h"

namespace accum::data {
namespace {

using testing::iota_tokens;
using testing::TempDir;

// Opens and expects failure; returns the message.
std::string open_error(const std::vector<std::string>& paths, accum::v1::DataFormat format,
                       int vocab, bool mask = false) {
  auto stream = TokenStream::open(paths, format, vocab, mask);
  EXPECT_FALSE(stream.ok()) << "opened although the data is bad";
  return stream.ok() ? std::string() : std::string(stream.status().message());
}

#define EXPECT_MENTIONS(message, text) \
  EXPECT_NE((message).find(text), std::string::npos) << "message: " << (message)

TEST(DataErrors, MissingFileIsNamed) {
  TempDir dir;
  const std::string path = dir.file("absent.bin");
  auto stream = TokenStream::open({path}, accum::v1::AUTO, 256, false);
  ASSERT_FALSE(stream.ok());
  EXPECT_TRUE(absl::IsNotFound(stream.status()));
  EXPECT_MENTIONS(std::string(stream.status().message()), path);
}

// A named pipe is no data file: opening it for reading used to wait for a writer forever
// (the worker hung, and ignored SIGTERM). It is refused at once, by name.
TEST(DataErrors, NamedPipeIsRefusedWithoutWaiting) {
  TempDir dir;
  const std::string path = dir.file("pipe.txt");
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  auto opened = std::async(std::launch::async, [&] {
    auto stream = TokenStream::open({path}, accum::v1::TEXT_BYTES, 256, false);
    return stream.ok() ? std::string("opened") : std::string(stream.status().message());
  });
  if (opened.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    int writer = ::open(path.c_str(), O_WRONLY | O_NONBLOCK);  // lets the blocked open return
    ADD_FAILURE() << "opening a named pipe as data did not return within 20 s";
    opened.wait();
    if (writer >= 0) ::close(writer);
    return;
  }
  const std::string message = opened.get();
  EXPECT_MENTIONS(message, path);
  EXPECT_MENTIONS(message, "not a regular file");
}

TEST(DataErrors, EmptyFileIsNamed) {
  TempDir dir;
  testing::write_text(dir.file("empty.txt"), "");
  std::string message = open_error({dir.file("empty.txt")}, accum::v1::TEXT_BYTES, 256);
  EXPECT_MENTIONS(message, dir.file("empty.txt"));
  EXPECT_MENTIONS(message, "no tokens");
}

TEST(DataErrors, ShortLlmcHeaderIsNamed) {
  TempDir dir;
  int32_t partial[10] = {20240520, 1, 5};  // magic present, header cut at 40 bytes
  testing::write_bytes(dir.file("short.bin"), partial, sizeof(partial));
  std::string message = open_error({dir.file("short.bin")}, accum::v1::AUTO, 50257);
  EXPECT_MENTIONS(message, dir.file("short.bin"));
  EXPECT_MENTIONS(message, "1024-byte header");
  EXPECT_MENTIONS(message, "40 bytes");
}

TEST(DataErrors, BadMagicNamesFileOffsetAndValue) {
  TempDir dir;
  testing::write_llmc(dir.file("shard.bin"), iota_tokens(0, 8));
  int32_t wrong = 12345;
  std::FILE* f = std::fopen(dir.file("shard.bin").c_str(), "r+b");
  ASSERT_NE(f, nullptr);
  std::fwrite(&wrong, 4, 1, f);
  std::fclose(f);
  std::string message = open_error({dir.file("shard.bin")}, accum::v1::LLMC, 50257);
  EXPECT_MENTIONS(message, dir.file("shard.bin"));
  EXPECT_MENTIONS(message, "bad magic 12345");
  EXPECT_MENTIONS(message, "byte offset 0");
  EXPECT_MENTIONS(message, "20240520");
}

TEST(DataErrors, BadVersionIsNamed) {
  TempDir dir;
  testing::write_llmc(dir.file("v7.bin"), iota_tokens(0, 8), false, /*version=*/7);
  std::string message = open_error({dir.file("v7.bin")}, accum::v1::AUTO, 50257);
  EXPECT_MENTIONS(message, dir.file("v7.bin"));
  EXPECT_MENTIONS(message, "version 7");
  EXPECT_MENTIONS(message, "expected 1");
}

TEST(DataErrors, BadUint32VersionNamesTheVersionLlmcWrites) {
  TempDir dir;
  testing::write_llmc(dir.file("v2.bin"), iota_tokens(0, 8), /*wide=*/true, /*version=*/2);
  std::string message = open_error({dir.file("v2.bin")}, accum::v1::AUTO, 50257);
  EXPECT_MENTIONS(message, dir.file("v2.bin"));
  EXPECT_MENTIONS(message, "version 2");
  EXPECT_MENTIONS(message, "expected 7 (or 1) with magic 20240801");
}

TEST(DataErrors, SizeDifferentFromHeaderIsNamed) {
  TempDir dir;
  testing::write_llmc(dir.file("cut.bin"), iota_tokens(0, 100));
  std::filesystem::resize_file(dir.file("cut.bin"), 1024 + 2 * 60);  // truncated shard
  std::string message = open_error({dir.file("cut.bin")}, accum::v1::AUTO, 50257);
  EXPECT_MENTIONS(message, dir.file("cut.bin"));
  EXPECT_MENTIONS(message, "1144 bytes");
  EXPECT_MENTIONS(message, "100 tokens");
  EXPECT_MENTIONS(message, "1224");  // 1024 + 100 * 2
}

TEST(DataErrors, OddSizedNanoGptBinIsNamed) {
  TempDir dir;
  testing::write_text(dir.file("odd.bin"), "abcde");
  std::string message = open_error({dir.file("odd.bin")}, accum::v1::AUTO, 50257);
  EXPECT_MENTIONS(message, dir.file("odd.bin"));
  EXPECT_MENTIONS(message, "5 bytes");
}

TEST(DataErrors, TokenAboveVocabNamesFileIndexOffsetAndValue) {
  TempDir dir;
  auto tokens = iota_tokens(0, 5000);
  tokens[4321] = 50300;  // >= GPT-2 vocab 50257
  testing::write_llmc(dir.file("good.bin"), iota_tokens(0, 10));
  testing::write_llmc(dir.file("bad.bin"), tokens);
  std::string message =
      open_error({dir.file("good.bin"), dir.file("bad.bin")}, accum::v1::AUTO, 50257);
  EXPECT_MENTIONS(message, dir.file("bad.bin"));
  EXPECT_MENTIONS(message, "token 50300");
  EXPECT_MENTIONS(message, "index 4321");
  EXPECT_MENTIONS(message, "byte offset 9666");  // 1024 + 2 * 4321
  EXPECT_MENTIONS(message, "vocab_size is 50257");
}

TEST(DataErrors, TokenAboveVocabInsideAFullScanBlockIsFound) {
  TempDir dir;
  for (int bad_index : {0, 4095, 4096, 8191, 12287, 12299}) {
    auto tokens = iota_tokens(0, 12300);
    for (auto& t : tokens) t %= 1000;
    tokens[bad_index] = 1000;
    testing::write_nanogpt(dir.file("n.bin"), tokens);
    std::string message = open_error({dir.file("n.bin")}, accum::v1::AUTO, 1000);
    EXPECT_MENTIONS(message, "token 1000 at token index " + std::to_string(bad_index) + " ");
  }
}

TEST(DataErrors, Uint32TokenAboveVocabIsNamed) {
  TempDir dir;
  auto tokens = iota_tokens(0, 20);
  tokens[19] = 100000;
  testing::write_llmc(dir.file("wide.bin"), tokens, /*wide=*/true);
  std::string message = open_error({dir.file("wide.bin")}, accum::v1::LLMC, 100000);
  EXPECT_MENTIONS(message, dir.file("wide.bin"));
  EXPECT_MENTIONS(message, "token 100000 at token index 19 (byte offset 1100)");
}

TEST(DataErrors, ByteAboveSmallVocabIsNamed) {
  TempDir dir;
  testing::write_text(dir.file("t.txt"), "abc~z");  // '~' = 126
  std::string message = open_error({dir.file("t.txt")}, accum::v1::TEXT_BYTES, 120);
  EXPECT_MENTIONS(message, dir.file("t.txt"));
  EXPECT_MENTIONS(message, "token 126 at token index 3");  // the first byte >= 120
}

TEST(DataErrors, MissingMaskSidecarIsNamed) {
  TempDir dir;
  testing::write_llmc(dir.file("a.bin"), iota_tokens(0, 10));
  std::string message = open_error({dir.file("a.bin")}, accum::v1::AUTO, 100, /*mask=*/true);
  EXPECT_MENTIONS(message, dir.file("a.bin.mask"));
  EXPECT_MENTIONS(message, "does not exist");
}

TEST(DataErrors, MaskLengthMismatchIsNamed) {
  TempDir dir;
  testing::write_llmc(dir.file("a.bin"), iota_tokens(0, 10));
  testing::write_text(dir.file("a.bin.mask"), std::string(9, '\1'));
  std::string message = open_error({dir.file("a.bin")}, accum::v1::AUTO, 100, /*mask=*/true);
  EXPECT_MENTIONS(message, dir.file("a.bin.mask"));
  EXPECT_MENTIONS(message, "9 bytes");
  EXPECT_MENTIONS(message, "10 tokens");
}

TEST(DataErrors, StreamTooShortForOneMicroBatchIsExplained) {
  TempDir dir;
  testing::write_text(dir.file("tiny.txt"), "0123456789");  // 10 tokens
  auto stream = TokenStream::open({dir.file("tiny.txt")}, accum::v1::TEXT_BYTES, 256, false);
  ASSERT_TRUE(stream.ok()) << stream.status();
  EXPECT_EQ((*stream)->chunk_count(9), 1);  // 9 + 1 tokens: exactly one chunk
  EXPECT_TRUE((*stream)->check_length(3, 3).ok());
  EXPECT_EQ((*stream)->chunk_count(10), 0);
  absl::Status status = (*stream)->check_length(2, 5);
  ASSERT_FALSE(status.ok());
  std::string message(status.message());
  EXPECT_MENTIONS(message, dir.file("tiny.txt"));
  EXPECT_MENTIONS(message, "has 10 tokens");
  EXPECT_MENTIONS(message, "B*T+1 = 2*5+1 = 11");
}

}  // namespace
}  // namespace accum::data
