// tests/common/same_bytes.h — byte-for-byte file comparisons that cannot pass vacuously.
//
// Reading a missing file as "" made two missing checkpoints compare equal, so a resume
// test that wrote no final checkpoint on either side passed. These fail on a missing or
// empty file, and name the first differing offset instead of printing megabytes.
#pragma once

#include <gtest/gtest.h>

#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace accum::testing {

// The file's bytes, or nullopt when it cannot be opened.
inline std::optional<std::string> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// The bytes of a file the test needs to exist (a snapshot to compare later): a missing or
// empty file is a test failure, and reads as "".
inline std::string read_existing_file(const std::string& path) {
  const auto bytes = file_bytes(path);
  if (!bytes) {
    ADD_FAILURE() << "expected the file " << path << " to exist";
    return "";
  }
  if (bytes->empty()) ADD_FAILURE() << "expected the file " << path << " to hold something";
  return *bytes;
}

// Both files exist, are not empty, and hold the same bytes: EXPECT_TRUE(same_bytes(a, b)).
inline ::testing::AssertionResult same_bytes(const std::string& a, const std::string& b) {
  const auto left = file_bytes(a), right = file_bytes(b);
  if (!left) return ::testing::AssertionFailure() << a << " does not exist";
  if (!right) return ::testing::AssertionFailure() << b << " does not exist";
  if (left->empty()) return ::testing::AssertionFailure() << a << " is empty";
  if (*left == *right) return ::testing::AssertionSuccess();
  size_t at = 0;
  while (at < left->size() && at < right->size() && (*left)[at] == (*right)[at]) ++at;
  return ::testing::AssertionFailure() << a << " (" << left->size() << " bytes) and " << b << " ("
                                       << right->size() << " bytes) differ from byte " << at;
}

// `path` exists and holds exactly `expected` (a snapshot read_existing_file took).
inline ::testing::AssertionResult holds_bytes(const std::string& path,
                                              const std::string& expected) {
  const auto bytes = file_bytes(path);
  if (!bytes) return ::testing::AssertionFailure() << path << " does not exist";
  if (*bytes == expected) return ::testing::AssertionSuccess();
  size_t at = 0;
  while (at < bytes->size() && at < expected.size() && (*bytes)[at] == expected[at]) ++at;
  return ::testing::AssertionFailure()
         << path << " (" << bytes->size() << " bytes) differs from the expected " << expected.size()
         << " bytes from byte " << at;
}

}  // namespace accum::testing
