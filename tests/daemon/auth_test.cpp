// accumd's token file (control/auth.h): read at start, named with what is wrong.
#include "daemon/control/auth.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/common/temp_dir.h"

namespace accum::testing {
namespace {

using control::TokenAuth;

TEST(TokenFile, IsReadWithoutItsSurroundingWhitespace) {
  const TempDir dir;
  const std::string path = dir.path() + "/token";
  std::ofstream(path) << "  s3cret\n";
  auto token = TokenAuth::read_token_file(path);
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "s3cret");
}

// A file that cannot be read says why: a missing file and an unreadable one need different
// fixes.
TEST(TokenFile, ThatCannotBeReadSaysWhy) {
  const TempDir dir;
  const std::string missing = dir.path() + "/no-token";
  auto token = TokenAuth::read_token_file(missing);
  ASSERT_FALSE(token.ok());
  EXPECT_EQ(token.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(token.status().message(),
            "token file " + missing + ": cannot read: No such file or directory");
}

TEST(TokenFile, ThatIsEmptyIsRefused) {
  const TempDir dir;
  const std::string path = dir.path() + "/token";
  std::ofstream(path) << " \n";
  auto token = TokenAuth::read_token_file(path);
  ASSERT_FALSE(token.ok());
  EXPECT_EQ(token.status().message(), "token file " + path + ": empty; expected a token");
}

}  // namespace
}  // namespace accum::testing
