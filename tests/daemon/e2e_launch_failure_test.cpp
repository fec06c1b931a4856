// tests/daemon/e2e_launch_failure_test.cpp — a launch that fails (accumd cannot create the
// attempt's log folder) while the job store refuses the FAILED that records it: accumd keeps
// that outcome and retries it, so the job ends FAILED (launch_failed, naming the cause) once
// the store takes it, instead of staying STARTING with no process. Meanwhile GetJob and
// ListJobs say what happened, a cancel is told the job already ended, and nothing relaunches
// it. The store's refusals come from the test-only hook ACCUM_TEST_REFUSE_TRANSITIONS
// (control/job_store.cpp): a real full disk would refuse the STARTING before it as well.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/daemon/daemon_harness.h"

namespace accum::testing {
namespace {

using accum::v1::JobStatus;

TEST(DaemonSupervision, FailedLaunchIsRecordedOnceTheStoreTakesItAndNotRelaunched) {
  DaemonHarness daemon;
  DaemonOptions options = with_slots(1);
  // About 5 s of refused ticks (one every 100 ms), wide enough for the checks below.
  options.extra_env = {"ACCUM_TEST_REFUSE_TRANSITIONS=FAILED:50"};
  ASSERT_TRUE(daemon.start(options));

  // The blocker holds the only slot, so the job waits in the queue while the test puts a
  // file where its first attempt's log folder goes: that launch cannot create its logs.
  JobStatus blocker, job;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("blocker", 100000, 1, 0), &blocker).ok());
  ASSERT_TRUE(daemon.submit(daemon.spec_json("unlaunchable", 3, 1, 0), &job).ok());
  ASSERT_EQ(job.state(), accum::v1::QUEUED);
  const std::string attempt_dir = job.job_dir() + "/logs/attempt-1";
  std::ofstream(attempt_dir) << "not a folder\n";
  ASSERT_TRUE(daemon.cancel(blocker.id(), /*force=*/true).ok());

  ASSERT_TRUE(
      wait_for_log(daemon, "the job store refused its new state FAILED", std::chrono::seconds(20)))
      << "the launch did not fail, or accumd dropped the FAILED the store refused; the job is "
      << accum::v1::JobState_Name(daemon.get(job.id()).state()) << ": "
      << daemon.get(job.id()).message();
  // GetJob and ListJobs show the failure, and that the store does not have it yet.
  const JobStatus pending = daemon.get(job.id());
  EXPECT_EQ(pending.state(), accum::v1::FAILED) << pending.message();
  EXPECT_NE(pending.message().find("not yet in the job store"), std::string::npos)
      << pending.message();
  EXPECT_NE(pending.message().find("cannot create " + attempt_dir), std::string::npos)
      << pending.message();
  {
    accum::v1::ListJobsRequest request;
    accum::v1::ListJobsResponse reply;
    ASSERT_TRUE(daemon.stub().ListJobs(daemon.context().get(), request, &reply).ok());
    bool listed = false;
    for (const auto& listed_job : reply.jobs()) {
      if (listed_job.id() != job.id()) continue;
      listed = true;
      EXPECT_EQ(listed_job.state(), accum::v1::FAILED) << listed_job.message();
    }
    EXPECT_TRUE(listed) << "ListJobs left out " << job.id();
  }
  // A cancel neither replaces the failure with CANCELLED nor claims to have ended the job.
  {
    const grpc::Status cancelled = daemon.cancel(job.id(), /*force=*/false);
    EXPECT_EQ(cancelled.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
        << cancelled.error_message();
    EXPECT_NE(cancelled.error_message().find("already ended (FAILED"), std::string::npos)
        << cancelled.error_message();
  }

  // GetJob says FAILED all along now: the store has it once its history ends there.
  const JobStatus done = daemon.wait_for(
      job.id(),
      [](const JobStatus& j) {
        if (j.transitions_size() == 0) return false;
        JobStatus last;  // the state its stored history ends in
        last.set_state(j.transitions(j.transitions_size() - 1).state());
        return ended(last);
      },
      std::chrono::seconds(30));
  ASSERT_EQ(done.state(), accum::v1::FAILED) << done.message();
  EXPECT_EQ(done.message().find("not yet in the job store"), std::string::npos) << done.message();
  EXPECT_NE(done.message().find("cannot create " + attempt_dir), std::string::npos)
      << done.message();
  ASSERT_GT(done.transitions_size(), 0);
  EXPECT_EQ(done.transitions(done.transitions_size() - 1).reason(), "launch_failed");
  // One launch: the pending FAILED was never taken for a job to start again.
  EXPECT_EQ(transition_states(done),
            (std::vector<accum::v1::JobState>{accum::v1::QUEUED, accum::v1::STARTING,
                                              accum::v1::FAILED}));
  EXPECT_FALSE(std::filesystem::exists(job.job_dir() + "/logs/attempt-2"));
  EXPECT_TRUE(log_says(daemon, "FAILED recorded after"));

  // Its slot is free again: the next job runs.
  JobStatus next;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("next", 3, 1, 0), &next).ok());
  const JobStatus next_done = daemon.wait_for(next.id(), ended, std::chrono::seconds(60));
  EXPECT_EQ(next_done.state(), accum::v1::SUCCEEDED) << next_done.message();
}

}  // namespace
}  // namespace accum::testing
