// tests/io/safetensors_test.cpp — write/read round trip, the byte layout of the
// format, F16/BF16 reading, and refusal of corrupt headers naming the file and
// the tensor.
#include "daemon/worker/io/safetensors.h"

#include <gtest/gtest.h>

#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "daemon/worker/io/checkpoint_dir.h"
#include "tests/io/temp_dir.h"

namespace accum::io {
namespace {

using testing::TempDir;

// Builds a safetensors file by hand: header JSON text + raw data bytes.
std::string raw_file(const std::string& header, const std::string& data) {
  uint64_t n = header.size();
  std::string bytes(reinterpret_cast<const char*>(&n), 8);
  return bytes + header + data;
}

std::string read_error(const std::string& path) {
  auto file = read_safetensors(path);
  EXPECT_FALSE(file.ok()) << "accepted a corrupt file";
  return file.ok() ? std::string() : std::string(file.status().message());
}

#define EXPECT_MENTIONS(message, text) \
  EXPECT_NE((message).find(text), std::string::npos) << "message: " << (message)

TEST(Safetensors, RoundTripKeepsNamesShapesDataAndMetadata) {
  TempDir dir;
  std::vector<float> wte(6 * 4), bias(3), scalar{3.25f};
  for (size_t i = 0; i < wte.size(); ++i) wte[i] = 0.01f * static_cast<float>(i) - 0.1f;
  bias = {1e-30f, -2.0f, 7.5f};
  const std::string path = dir.file("model.safetensors");
  ASSERT_TRUE(write_safetensors(path,
                                {{"transformer.wte.weight", {6, 4}, wte.data()},
                                 {"transformer.h.0.ln_1.bias", {3}, bias.data()},
                                 {"scalar", {}, scalar.data()},
                                 {"empty", {0, 5}, nullptr}},
                                {{"format", "pt"}, {"step", "100"}})
                  .ok());
  auto file = read_safetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(file->tensors.size(), 4u);
  const Tensor& t = file->tensors.at("transformer.wte.weight");
  EXPECT_EQ(t.shape, (std::vector<int64_t>{6, 4}));
  EXPECT_EQ(t.data, wte);  // bit-exact
  EXPECT_EQ(file->tensors.at("transformer.h.0.ln_1.bias").data, bias);
  EXPECT_TRUE(file->tensors.at("scalar").shape.empty());
  EXPECT_EQ(file->tensors.at("scalar").data, scalar);
  EXPECT_EQ(file->tensors.at("empty").shape, (std::vector<int64_t>{0, 5}));
  EXPECT_TRUE(file->tensors.at("empty").data.empty());
  EXPECT_EQ(file->metadata.at("format"), "pt");
  EXPECT_EQ(file->metadata.at("step"), "100");
}

TEST(Safetensors, LayoutIsLittleEndianLengthThenSpacePaddedHeaderThenData) {
  TempDir dir;
  const std::string path = dir.file("x.safetensors");
  float values[2] = {1.0f, -1.0f};
  ASSERT_TRUE(write_safetensors(path, {{"a", {2}, values}}).ok());
  auto bytes = read_file(path);
  ASSERT_TRUE(bytes.ok());
  uint64_t n;
  std::memcpy(&n, bytes->data(), 8);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_EQ(bytes->size(), 8 + n + 8);
  std::string header = bytes->substr(8, n);
  const std::string json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
  EXPECT_EQ(header.substr(0, json.size()), json);
  EXPECT_EQ(header.substr(json.size()), std::string(n - json.size(), ' '))
      << "padding must be spaces: [" << header << "]";
  float stored[2];
  std::memcpy(stored, bytes->data() + 8 + n, 8);
  EXPECT_EQ(stored[0], 1.0f);
  EXPECT_EQ(stored[1], -1.0f);
}

TEST(Safetensors, ReadsBf16AndF16AsFloat) {
  TempDir dir;
  // bf16: the top 16 bits of the fp32 pattern. 1.5f = 0x3FC00000, -2.25f = 0xC0100000.
  uint16_t bf16[3] = {0x3FC0, 0xC010, 0x0000};
  // f16: 1.0 = 0x3C00, -0.5 = 0xB800, 65504 = 0x7BFF (max), 2^-24 = 0x0001 (subnormal), inf.
  uint16_t f16[5] = {0x3C00, 0xB800, 0x7BFF, 0x0001, 0x7C00};
  std::string data(reinterpret_cast<const char*>(bf16), 6);
  data += std::string(reinterpret_cast<const char*>(f16), 10);
  const std::string header = R"({"h":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]},)"
                             R"("f":{"dtype":"F16","shape":[5],"data_offsets":[6,16]}})";
  testing::write_text_file(dir.file("half.safetensors"), raw_file(header, data));
  auto file = read_safetensors(dir.file("half.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors.at("h").data, (std::vector<float>{1.5f, -2.25f, 0.0f}));
  const std::vector<float>& f = file->tensors.at("f").data;
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[1], -0.5f);
  EXPECT_EQ(f[2], 65504.0f);
  EXPECT_EQ(f[3], std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(f[4]));
}

// The reader of checkpoints: any range of a tensor, in any order, equals the whole read;
// bf16 and f16 ranges convert like whole tensors (through its small buffer of halves).
TEST(SafetensorsReader, PiecesEqualTheWholeTensor) {
  TempDir dir;
  // 70,000 halves: more than one pass of the reader's buffer of 65,536.
  const size_t n = 70000;
  std::vector<uint16_t> halves(n);
  for (size_t i = 0; i < n; ++i) halves[i] = static_cast<uint16_t>(0x3C00 + (i * 7) % 1021);
  std::vector<float> f32(1000);
  for (size_t i = 0; i < f32.size(); ++i) f32[i] = std::sin(static_cast<float>(i));
  std::string data(reinterpret_cast<const char*>(halves.data()), 2 * n);
  data += std::string(reinterpret_cast<const char*>(f32.data()), 4 * f32.size());
  const std::string header = absl::StrCat(
      R"({"__metadata__":{"step":"7"},"h":{"dtype":"BF16","shape":[)", n, R"(],"data_offsets":[0,)",
      2 * n, R"(]},"f":{"dtype":"F32","shape":[10,100],"data_offsets":[)", 2 * n, ",", 2 * n + 4000,
      "]}}");
  const std::string path = dir.file("pieces.safetensors");
  testing::write_text_file(path, raw_file(header, data));
  auto whole = read_safetensors(path);
  ASSERT_TRUE(whole.ok()) << whole.status();
  auto reader = SafetensorsReader::open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->metadata().at("step"), "7");
  EXPECT_EQ((*reader)->shapes().at("f"), (std::vector<int64_t>{10, 100}));
  EXPECT_EQ((*reader)->elements("h"), n);
  EXPECT_EQ((*reader)->elements("nope"), 0u);
  for (const std::string name : {"h", "f"}) {
    const std::vector<float>& expected = whole->tensors.at(name).data;
    std::vector<float> got(expected.size(), -1.0f);
    // Back to front, in uneven pieces.
    for (size_t end = expected.size(); end > 0;) {
      const size_t begin = end > 66001 ? end - 66001 : (end > 333 ? end - 333 : 0);
      ASSERT_TRUE((*reader)->read(name, begin, end - begin, got.data() + begin).ok());
      end = begin;
    }
    EXPECT_EQ(got, expected) << name;
  }
  std::vector<float> one(2);
  auto past = (*reader)->read("f", 999, 2, one.data());
  EXPECT_TRUE(absl::IsInvalidArgument(past)) << past;
  EXPECT_MENTIONS(std::string(past.message()),
                  "elements [999, 1001) of tensor 'f', which has 1000");
  auto unknown = (*reader)->read("g", 0, 1, one.data());
  EXPECT_TRUE(absl::IsInvalidArgument(unknown)) << unknown;
  EXPECT_MENTIONS(std::string(unknown.message()), "no tensor 'g'");
}

// A file cut short after its header was checked (another process truncating it) is an
// error naming the file, not a crash and not zeros.
TEST(SafetensorsReader, FileTruncatedAfterOpenIsDataLoss) {
  TempDir dir;
  const std::string path = dir.file("cut.safetensors");
  std::vector<float> values(4096, 1.25f);
  ASSERT_TRUE(write_safetensors(path, {{"w", {4096}, values.data()}}).ok());
  auto reader = SafetensorsReader::open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 1000);
  std::vector<float> got(4096);
  auto status = (*reader)->read("w", 0, 4096, got.data());
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
  EXPECT_MENTIONS(std::string(status.message()), path);
  EXPECT_MENTIONS(std::string(status.message()), "truncated");
}

// The writer asks its PieceReader for pieces of at most kWritePieceFloats, in order, and
// writes what it returns: a tensor larger than one piece comes out whole and in order.
TEST(Safetensors, WriterTakesDataInPiecesThroughItsReader) {
  TempDir dir;
  const size_t n = kWritePieceFloats * 2 + 123;
  std::vector<float> source(n);
  for (size_t i = 0; i < n; ++i) source[i] = static_cast<float>(i % 100003);
  const float small[3] = {1, 2, 3};
  std::vector<float> staging;
  std::vector<size_t> pieces;
  auto through_staging = [&](const float* data, size_t count) -> const float* {
    pieces.push_back(count);
    staging.assign(data, data + count);  // as a GPU back end's download would
    return staging.data();
  };
  const std::string path = dir.file("pieces.safetensors");
  ASSERT_TRUE(write_safetensors(
                  path, {{"big", {static_cast<int64_t>(n)}, source.data()}, {"small", {3}, small}},
                  {}, through_staging)
                  .ok());
  EXPECT_EQ(pieces, (std::vector<size_t>{kWritePieceFloats, kWritePieceFloats, 123, 3}));
  auto file = read_safetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors.at("big").data, source);
  EXPECT_EQ(file->tensors.at("small").data, (std::vector<float>{1, 2, 3}));
}

class SafetensorsCorrupt : public ::testing::Test {
 protected:
  std::string write(const std::string& header, const std::string& data) {
    testing::write_text_file(path_, raw_file(header, data));
    return path_;
  }
  TempDir dir_;
  std::string path_ = dir_.file("bad.safetensors");
};

TEST_F(SafetensorsCorrupt, ShortFileIsNamed) {
  testing::write_text_file(path_, "abc");
  std::string message = read_error(path_);
  EXPECT_MENTIONS(message, path_);
  EXPECT_MENTIONS(message, "3 bytes");
}

TEST_F(SafetensorsCorrupt, HeaderLengthPastEndIsNamed) {
  std::string bytes = raw_file("{}", "");
  uint64_t too_long = 4096;
  std::memcpy(bytes.data(), &too_long, 8);
  testing::write_text_file(path_, bytes);
  std::string message = read_error(path_);
  EXPECT_MENTIONS(message, path_);
  EXPECT_MENTIONS(message, "header length 4096");
}

TEST_F(SafetensorsCorrupt, InvalidJsonIsNamed) {
  std::string message = read_error(write(R"({"a": {"dtype": "F32",)", ""));
  EXPECT_MENTIONS(message, path_);
  EXPECT_MENTIONS(message, "not valid JSON");
}

TEST_F(SafetensorsCorrupt, OffsetsPastDataAreNamedWithTheTensor) {
  std::string message = read_error(
      write(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, '\0')));
  EXPECT_MENTIONS(message, path_);
  EXPECT_MENTIONS(message, "tensor 'w'");
  EXPECT_MENTIONS(message, "run past the data section (8 bytes)");
}

TEST_F(SafetensorsCorrupt, ShapeNotMatchingByteLengthIsNamed) {
  std::string message = read_error(
      write(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", std::string(16, '\0')));
  EXPECT_MENTIONS(message, "tensor 'w'");
  EXPECT_MENTIONS(message, "span 16 bytes but shape x F32 needs 12");
}

TEST_F(SafetensorsCorrupt, GapBetweenTensorsIsNamed) {
  std::string message =
      read_error(write(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                       std::string(12, '\0')));
  EXPECT_MENTIONS(message, path_);
  EXPECT_MENTIONS(message, "tensor 'b' starts at data byte 8 but tensor 'a' ends at 4");
}

TEST_F(SafetensorsCorrupt, OverlappingTensorsAreRefused) {
  std::string message =
      read_error(write(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                       std::string(12, '\0')));
  EXPECT_MENTIONS(message, "tensor 'b' starts at data byte 4 but tensor 'a' ends at 8");
}

TEST_F(SafetensorsCorrupt, TrailingBytesNotCoveredAreRefused) {
  std::string message = read_error(
      write(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(6, '\0')));
  EXPECT_MENTIONS(message, "tensors cover 4 bytes of a data section of 6 bytes");
}

TEST_F(SafetensorsCorrupt, UnsupportedDtypeIsNamedWithTheTensor) {
  std::string message = read_error(
      write(R"({"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", std::string(8, '\0')));
  EXPECT_MENTIONS(message, path_);
  EXPECT_MENTIONS(message, "tensor 'ids'");
  EXPECT_MENTIONS(message, "unsupported dtype 'I64'");
}

// A model's buffers (older transformers saved GPT-2's causal mask as BOOL) are skipped
// whatever their dtype, yet their layout is still checked.
TEST_F(SafetensorsCorrupt, SkippedTensorsOfAnyDtypeAreCheckedButNotRead) {
  float w = 1.5f;
  const std::string header = R"({"mask":{"dtype":"BOOL","shape":[2,2],"data_offsets":[0,4]},)"
                             R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  const std::string path = write(
      header, std::string("\x01\x00\x01\x01", 4) + std::string(reinterpret_cast<char*>(&w), 4));
  EXPECT_MENTIONS(read_error(path), "tensor 'mask': unsupported dtype 'BOOL'");
  auto skip_mask = [](const std::string& name) { return name == "mask"; };
  auto file = read_safetensors(path, skip_mask);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors.count("mask"), 0u);
  ASSERT_EQ(file->tensors.count("w"), 1u);
  EXPECT_EQ(file->tensors.at("w").data, std::vector<float>{1.5f});

  const std::string short_mask = R"({"mask":{"dtype":"BOOL","shape":[2,2],"data_offsets":[0,3]},)"
                                 R"("w":{"dtype":"F32","shape":[1],"data_offsets":[3,7]}})";
  auto bad = read_safetensors(write(short_mask, std::string(7, '\0')), skip_mask);
  ASSERT_FALSE(bad.ok());
  EXPECT_MENTIONS(std::string(bad.status().message()), "tensor 'mask'");
  EXPECT_MENTIONS(read_error(write(R"({"m":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}})",
                                   std::string(1, '\0'))),
                  "unknown dtype 'Q4'");
}

TEST_F(SafetensorsCorrupt, MissingFieldsAndBadMetadataAreNamed) {
  EXPECT_MENTIONS(read_error(write(R"({"w":{"dtype":"F32","data_offsets":[0,0]}})", "")),
                  "tensor 'w': missing array field \"shape\"");
  EXPECT_MENTIONS(
      read_error(write(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", "")),
      "shape entries must be integers >= 0");
  EXPECT_MENTIONS(read_error(write(R"({"__metadata__":{"k":1}})", "")),
                  "\"__metadata__\" value of 'k' is not a string");
  EXPECT_MENTIONS(read_error(write(R"([1,2])", "")), "header is not a JSON object");
}

// A header of many keys is read in time linear in their number: with a linear search for
// duplicates, these 120,000 (a 3 MB header) took over a minute to refuse, and the 100 MB
// the reader allows would have taken days.
TEST_F(SafetensorsCorrupt, HeaderWithManyKeysIsRefusedQuickly) {
  constexpr int kKeys = 120000;
  std::string header = "{";
  for (int i = 0; i < kKeys; ++i) {
    absl::StrAppend(&header, "\"t", i,
                    "\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},");
  }
  header += "\"t7\":{}}";  // a duplicate, at the end
  const auto start = std::chrono::steady_clock::now();
  std::string message = read_error(write(header, ""));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_MENTIONS(message, path_);
  EXPECT_MENTIONS(message, "duplicate key \"t7\"");
  EXPECT_LT(seconds, 20.0) << "reading a " << header.size() << "-byte header";
}

TEST(Safetensors, MissingFileIsNotFound) {
  TempDir dir;
  auto file = read_safetensors(dir.file("nope.safetensors"));
  ASSERT_FALSE(file.ok());
  EXPECT_TRUE(absl::IsNotFound(file.status()));
  EXPECT_MENTIONS(std::string(file.status().message()), dir.file("nope.safetensors"));
}

TEST(Safetensors, WriterRefusesDuplicateNames) {
  TempDir dir;
  float x = 1;
  absl::Status s = write_safetensors(dir.file("d.safetensors"), {{"a", {1}, &x}, {"a", {1}, &x}});
  ASSERT_FALSE(s.ok());
  EXPECT_MENTIONS(std::string(s.message()), "duplicate tensor 'a'");
}

}  // namespace
}  // namespace accum::io
