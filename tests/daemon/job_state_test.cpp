// tests/daemon/job_state_test.cpp — the lifecycle table, without gRPC.
#include "daemon/control/job_state.h"

#include "gtest/gtest.h"

namespace accum::control {
namespace {

using namespace accum::v1;

TEST(JobState, HappyPathAndRestartsAreAllowed) {
  EXPECT_TRUE(transition_allowed(QUEUED, STARTING));
  EXPECT_TRUE(transition_allowed(STARTING, RUNNING));
  EXPECT_TRUE(transition_allowed(RUNNING, SUCCEEDED));
  EXPECT_TRUE(transition_allowed(RUNNING, RESTARTING));
  EXPECT_TRUE(transition_allowed(RESTARTING, STARTING));
  EXPECT_TRUE(transition_allowed(RUNNING, CANCELLING));
  EXPECT_TRUE(transition_allowed(CANCELLING, CANCELLED));
  // A graceful cancel that arrives during the last step: the job trained to max_steps.
  EXPECT_TRUE(transition_allowed(CANCELLING, SUCCEEDED));
  EXPECT_TRUE(transition_allowed(QUEUED, CANCELLED));
  EXPECT_TRUE(transition_allowed(RESTARTING, FAILED));
}

TEST(JobState, TerminalStatesAreFinalAndNonsenseIsRefused) {
  for (JobState terminal : {SUCCEEDED, FAILED, CANCELLED}) {
    EXPECT_TRUE(is_terminal(terminal));
    for (int to = QUEUED; to <= CANCELLED; ++to) {
      EXPECT_FALSE(transition_allowed(terminal, static_cast<JobState>(to)))
          << state_name(terminal) << " -> " << state_name(static_cast<JobState>(to));
    }
  }
  EXPECT_FALSE(transition_allowed(QUEUED, RUNNING));
  EXPECT_FALSE(transition_allowed(QUEUED, SUCCEEDED));
  EXPECT_FALSE(transition_allowed(CANCELLING, RUNNING));
  EXPECT_FALSE(transition_allowed(CANCELLING, RESTARTING));
  EXPECT_FALSE(transition_allowed(RUNNING, RUNNING));
  EXPECT_FALSE(transition_allowed(RUNNING, QUEUED));
  EXPECT_FALSE(is_terminal(RUNNING));
}

}  // namespace
}  // namespace accum::control
