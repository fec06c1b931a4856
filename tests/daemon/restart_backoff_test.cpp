// tests/daemon/restart_backoff_test.cpp — the restart delay and what is left of it after an
// accumd restart, read back from the wall-clock due time in the job store.
#include "daemon/control/restart_backoff.h"

#include "gtest/gtest.h"

namespace accum::control {
namespace {

using std::chrono::milliseconds;

TEST(RestartBackoff, DoublesPerRestartUpToTheMaximum) {
  EXPECT_EQ(restart_backoff(milliseconds(1000), 1), milliseconds(1000));
  EXPECT_EQ(restart_backoff(milliseconds(1000), 2), milliseconds(2000));
  EXPECT_EQ(restart_backoff(milliseconds(1000), 4), milliseconds(8000));
  EXPECT_EQ(restart_backoff(milliseconds(1000), 7), kMaxBackoff);
  EXPECT_EQ(restart_backoff(milliseconds(1000), 1000), kMaxBackoff);
  EXPECT_EQ(restart_backoff(milliseconds(0), 3), milliseconds(0));
  EXPECT_EQ(restart_backoff(milliseconds(2'000'000'000), 1000), kMaxBackoff);
}

TEST(RestartBackoff, RemainingIsTheRestUntilDueAndNothingOncePast) {
  constexpr int64_t kNow = 1'800'000'000'000;  // 2027, in ms since the epoch
  EXPECT_EQ(backoff_remaining(kNow + 2500, kNow), milliseconds(2500));
  EXPECT_EQ(backoff_remaining(kNow, kNow), milliseconds(0));
  EXPECT_EQ(backoff_remaining(kNow - 1, kNow), milliseconds(0));
  EXPECT_EQ(backoff_remaining(kNow - 86'400'000, kNow), milliseconds(0));
  // 0: a store from before due times were kept, whose restart was due at once.
  EXPECT_EQ(backoff_remaining(0, kNow), milliseconds(0));
  EXPECT_EQ(backoff_remaining(kNow + kMaxBackoff.count(), kNow), kMaxBackoff);
}

// A due time further ahead than any backoff (the clock was stepped back since it was written,
// or a damaged value) is waited for no longer than the longest backoff, never forever.
TEST(RestartBackoff, RemainingFarInTheFutureIsClampedToTheMaximumBackoff) {
  constexpr int64_t kNow = 1'800'000'000'000;
  EXPECT_EQ(backoff_remaining(kNow + kMaxBackoff.count() + 1, kNow), kMaxBackoff);
  EXPECT_EQ(backoff_remaining(kNow + 10LL * 365 * 86'400'000, kNow), kMaxBackoff);
  EXPECT_EQ(backoff_remaining(INT64_MAX, kNow), kMaxBackoff);
}

}  // namespace
}  // namespace accum::control
