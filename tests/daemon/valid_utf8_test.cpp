// tests/daemon/valid_utf8_test.cpp — valid_utf8(): valid text unchanged, each stray byte
// one U+FFFD, and the result accepted by protobuf as a `string` field.
#include "daemon/control/valid_utf8.h"

#include "gtest/gtest.h"
#include "proto/accum.pb.h"

namespace accum::control {
namespace {

constexpr const char* kFffd = "\xEF\xBF\xBD";

TEST(ValidUtf8, KeepsValidTextOfEveryLength) {
  const std::string text = "ascii \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF end";
  EXPECT_EQ(valid_utf8(text), text);
  EXPECT_EQ(valid_utf8(""), "");
  EXPECT_EQ(valid_utf8(std::string("a\0b", 3)), std::string("a\0b", 3));
}

TEST(ValidUtf8, ReplacesEachByteThatStartsNoWellFormedSequence) {
  // A Latin-1 file name, as a worker's error would quote it.
  EXPECT_EQ(valid_utf8("caf\xE9.bin"), std::string("caf") + kFffd + ".bin");
  // A lone continuation byte, a truncated sequence at the end, and one cut short by ASCII.
  EXPECT_EQ(valid_utf8("\x80"), kFffd);
  EXPECT_EQ(valid_utf8("x\xE2\x82"), std::string("x") + kFffd + kFffd);
  EXPECT_EQ(valid_utf8("\xE2\x82x"), std::string(kFffd) + kFffd + "x");
  // Overlong forms, a surrogate, above U+10FFFF, and bytes that never occur.
  EXPECT_EQ(valid_utf8("\xC0\xAF"), std::string(kFffd) + kFffd);
  EXPECT_EQ(valid_utf8("\xE0\x80\xAF"), std::string(kFffd) + kFffd + kFffd);
  EXPECT_EQ(valid_utf8("\xED\xA0\x80"), std::string(kFffd) + kFffd + kFffd);
  EXPECT_EQ(valid_utf8("\xF4\x90\x80\x80"), std::string(kFffd) + kFffd + kFffd + kFffd);
  EXPECT_EQ(valid_utf8("\xFF\xFE"), std::string(kFffd) + kFffd);
}

TEST(ValidUtf8, ResultParsesAsAProtoString) {
  std::string all_bytes;
  for (int byte = 0; byte < 256; ++byte) all_bytes += static_cast<char>(byte);
  accum::v1::LogLine line;
  line.set_line(valid_utf8(all_bytes + "\xE2\x82"));
  accum::v1::LogLine parsed;
  EXPECT_TRUE(parsed.ParseFromString(line.SerializeAsString()));
  EXPECT_EQ(parsed.line(), line.line());
}

}  // namespace
}  // namespace accum::control
