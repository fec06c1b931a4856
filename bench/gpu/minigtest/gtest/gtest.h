// bench/gpu/minigtest/gtest/gtest.h — a tiny stand-in for GoogleTest, used ONLY by the
// standalone GPU build (bench/gpu/CMakeLists.txt) on hosts without GoogleTest. It covers
// what tests/gpu uses: TEST, GTEST_SKIP, EXPECT/ASSERT_{TRUE,EQ,NE,LT,LE,GT,NEAR} with streamed
// messages, SCOPED_TRACE (of anything streamable), and prints GoogleTest's status lines ("[ SKIPPED
// ]", "[  FAILED  ]",
// ...) so ctest's SKIP_REGULAR_EXPRESSION and human readers see the same thing. Where GoogleTest is
// installed the real one is used instead.
#pragma once

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

namespace minigtest {

struct TestCase {
  std::string suite, name;
  void (*body)();
};

std::vector<TestCase>& registry();

struct Registrar {
  Registrar(const char* suite, const char* name, void (*body)()) {
    registry().push_back({suite, name, body});
  }
};

enum class Kind { kExpect, kAssert, kSkip };

// Collects a streamed message; on destruction prints it and records failure or skip.
class Reporter {
 public:
  Reporter(Kind kind, const char* file, int line, std::string what);
  ~Reporter();
  template <typename T>
  Reporter& operator<<(const T& value) {
    message_ << value;
    return *this;
  }

 private:
  Kind kind_;
  std::string where_, what_;
  std::ostringstream message_;
};

// SCOPED_TRACE: while in scope, failures also print "file:line: message".
std::vector<std::string>& traces();
template <typename T>
std::string to_text(const T& value) {
  std::ostringstream out;
  out << value;
  return out.str();
}
class ScopedTrace {
 public:
  ScopedTrace(const char* file, int line, const std::string& message);
  template <typename T>  // as GoogleTest's: anything `<<` prints (a number, a C string, ...)
  ScopedTrace(const char* file, int line, const T& message)
      : ScopedTrace(file, line, to_text(message)) {}
  ~ScopedTrace() { traces().pop_back(); }
  ScopedTrace(const ScopedTrace&) = delete;
  ScopedTrace& operator=(const ScopedTrace&) = delete;
};

// Lets `return Voidify() & Reporter(...) << ...;` compile in functions returning void.
struct Voidify {
  void operator&(const Reporter&) const {}
};

template <typename A, typename B>
std::string describe(const char* a_text, const char* op, const char* b_text, const A& a,
                     const B& b) {
  std::ostringstream out;
  out << "Expected: (" << a_text << ") " << op << " (" << b_text << "), actual: " << a << " vs "
      << b << " ";
  return out.str();
}

template <typename A, typename B, typename T>
std::string describe_near(const char* a_text, const char* b_text, const char* tol_text, const A& a,
                          const B& b, const T& tol) {
  std::ostringstream out;
  out << "The difference between " << a_text << " and " << b_text << " is " << std::fabs(a - b)
      << ", which exceeds " << tol_text << " = " << tol << " (" << a << " vs " << b << ") ";
  return out.str();
}

}  // namespace minigtest

#define TEST(suite, name)                                                                 \
  static void suite##_##name##_body();                                                    \
  static const ::minigtest::Registrar suite##_##name##_registrar(#suite, #name,           \
                                                                 &suite##_##name##_body); \
  static void suite##_##name##_body()

#define MINIGTEST_CHECK_(cond, kind, what) \
  if (cond) {                              \
  } else                                   \
    ::minigtest::Reporter(kind, __FILE__, __LINE__, what)
#define MINIGTEST_ASSERT_(cond, what) \
  if (cond) {                         \
  } else                              \
    return ::minigtest::Voidify() &   \
           ::minigtest::Reporter(::minigtest::Kind::kAssert, __FILE__, __LINE__, what)

#define GTEST_SKIP() MINIGTEST_ASSERT_SKIP_()
#define MINIGTEST_ASSERT_SKIP_()  \
  return ::minigtest::Voidify() & \
         ::minigtest::Reporter(::minigtest::Kind::kSkip, __FILE__, __LINE__, "")

#define MINIGTEST_CAT2_(a, b) a##b
#define MINIGTEST_CAT_(a, b) MINIGTEST_CAT2_(a, b)
#define SCOPED_TRACE(message) \
  ::minigtest::ScopedTrace MINIGTEST_CAT_(minigtest_trace_, __LINE__)(__FILE__, __LINE__, (message))

#define MINIGTEST_CMP_(a, op, b) ::minigtest::describe(#a, #op, #b, (a), (b))
#define EXPECT_TRUE(c) MINIGTEST_CHECK_((c), ::minigtest::Kind::kExpect, "Expected true: " #c " ")
#define ASSERT_TRUE(c) MINIGTEST_ASSERT_((c), "Expected true: " #c " ")
#define EXPECT_EQ(a, b) \
  MINIGTEST_CHECK_((a) == (b), ::minigtest::Kind::kExpect, MINIGTEST_CMP_(a, ==, b))
#define ASSERT_EQ(a, b) MINIGTEST_ASSERT_((a) == (b), MINIGTEST_CMP_(a, ==, b))
#define EXPECT_NE(a, b) \
  MINIGTEST_CHECK_((a) != (b), ::minigtest::Kind::kExpect, MINIGTEST_CMP_(a, !=, b))
#define ASSERT_NE(a, b) MINIGTEST_ASSERT_((a) != (b), MINIGTEST_CMP_(a, !=, b))
#define EXPECT_LT(a, b) \
  MINIGTEST_CHECK_((a) < (b), ::minigtest::Kind::kExpect, MINIGTEST_CMP_(a, <, b))
#define ASSERT_LT(a, b) MINIGTEST_ASSERT_((a) < (b), MINIGTEST_CMP_(a, <, b))
#define EXPECT_LE(a, b) \
  MINIGTEST_CHECK_((a) <= (b), ::minigtest::Kind::kExpect, MINIGTEST_CMP_(a, <=, b))
#define ASSERT_LE(a, b) MINIGTEST_ASSERT_((a) <= (b), MINIGTEST_CMP_(a, <=, b))
#define EXPECT_GT(a, b) \
  MINIGTEST_CHECK_((a) > (b), ::minigtest::Kind::kExpect, MINIGTEST_CMP_(a, >, b))
#define ASSERT_GT(a, b) MINIGTEST_ASSERT_((a) > (b), MINIGTEST_CMP_(a, >, b))
#define MINIGTEST_NEAR_(a, b, tol) (std::fabs((a) - (b)) <= (tol))
#define MINIGTEST_DESCRIBE_NEAR_(a, b, tol) \
  ::minigtest::describe_near(#a, #b, #tol, (a), (b), (tol))
#define EXPECT_NEAR(a, b, tol)                                             \
  MINIGTEST_CHECK_(MINIGTEST_NEAR_(a, b, tol), ::minigtest::Kind::kExpect, \
                   MINIGTEST_DESCRIBE_NEAR_(a, b, tol))
#define ASSERT_NEAR(a, b, tol) \
  MINIGTEST_ASSERT_(MINIGTEST_NEAR_(a, b, tol), MINIGTEST_DESCRIBE_NEAR_(a, b, tol))
