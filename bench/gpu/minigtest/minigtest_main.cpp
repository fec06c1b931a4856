// bench/gpu/minigtest/minigtest_main.cpp — runs every registered TEST in registration
// order, GoogleTest-style output; --gtest_filter=POSITIVE[-NEGATIVE] selects tests as
// GoogleTest does: each side a ':'-separated list of patterns with '*' and '?' wildcards; a
// test runs when it matches a positive pattern (an empty list: all) and no negative one.
// Exit status 1 when any test failed.
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>
#include <utility>

#include "gtest/gtest.h"

namespace minigtest {
namespace {

struct RunState {
  bool failed = false;
  bool skipped = false;
};
RunState& run_state() {
  static RunState state;
  return state;
}

bool wildcard_match(const char* pattern, const char* text) {
  if (*pattern == '\0') return *text == '\0';
  if (*pattern == '*')
    return wildcard_match(pattern + 1, text) || (*text && wildcard_match(pattern, text + 1));
  return *text && (*pattern == '?' || *pattern == *text) && wildcard_match(pattern + 1, text + 1);
}

// Whether `name` matches one of the ':'-separated patterns in `patterns`.
bool matches_any(const std::string& patterns, const std::string& name) {
  size_t start = 0;
  while (start <= patterns.size()) {
    const size_t end = patterns.find(':', start);
    const std::string one =
        patterns.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (wildcard_match(one.c_str(), name.c_str())) return true;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return false;
}

bool selected(const std::string& filter, const std::string& full_name) {
  const size_t dash = filter.find('-');
  const std::string positive = filter.substr(0, dash);
  if (!positive.empty() && !matches_any(positive, full_name)) return false;
  return dash == std::string::npos || !matches_any(filter.substr(dash + 1), full_name);
}

}  // namespace

std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}

Reporter::Reporter(Kind kind, const char* file, int line, std::string what)
    : kind_(kind), where_(std::string(file) + ":" + std::to_string(line)), what_(std::move(what)) {}

std::vector<std::string>& traces() {
  static std::vector<std::string> stack;
  return stack;
}

ScopedTrace::ScopedTrace(const char* file, int line, const std::string& message) {
  traces().push_back(std::string(file) + ":" + std::to_string(line) + ": " + message);
}

Reporter::~Reporter() {
  if (kind_ == Kind::kSkip) {
    run_state().skipped = true;
    std::cout << where_ << ": Skipped\n" << message_.str() << "\n";
  } else {
    run_state().failed = true;
    std::cout << where_ << ": Failure\n" << what_ << message_.str() << "\n";
    for (const std::string& trace : traces()) std::cout << "Trace: " << trace << "\n";
  }
}

}  // namespace minigtest

int main(int argc, char** argv) {
  std::string filter;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--gtest_filter=", 15) == 0) filter = argv[i] + 15;
  }
  int passed = 0, failed = 0, skipped = 0;
  for (const auto& test : minigtest::registry()) {
    const std::string full = test.suite + "." + test.name;
    if (!minigtest::selected(filter, full)) continue;
    std::cout << "[ RUN      ] " << full << std::endl;
    minigtest::run_state() = {};
    try {
      test.body();
    } catch (const std::exception& e) {
      std::cout << "unexpected exception: " << e.what() << "\n";
      minigtest::run_state().failed = true;
    }
    if (minigtest::run_state().failed) {
      std::cout << "[  FAILED  ] " << full << std::endl;
      ++failed;
    } else if (minigtest::run_state().skipped) {
      std::cout << "[  SKIPPED ] " << full << std::endl;
      ++skipped;
    } else {
      std::cout << "[       OK ] " << full << std::endl;
      ++passed;
    }
  }
  std::cout << "[  PASSED  ] " << passed << " tests.\n";
  if (skipped) std::cout << "[  SKIPPED ] " << skipped << " tests.\n";
  if (failed) std::cout << "[  FAILED  ] " << failed << " tests.\n";
  return failed ? 1 : 0;
}
