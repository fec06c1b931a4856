// tests/daemon/e2e_launch_failure_test.cpp — a launch that fails (accumd cannot create the
// attempt's log folder) while the job store refuses the FAILED that records it: accumd keeps
// that outcome and retries it, so the job ends FAILED (launch_failed, naming the cause) once
// the store takes it, instead of staying STARTING with no process. Meanwhile GetJob and
// ListJobs say what happened, a cancel, a continue and a delete are told the job already ended
// (not that it is STARTING, as the store still has it), and nothing relaunches it. The store's
// refusals come from the test-only hook ACCUM_TEST_REFUSE_TRANSITIONS (control/job_store.cpp): a
// real full disk would refuse the STARTING before it as well.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/daemon/daemon_harness.h"

namespace accum::testing {
namespace {

using accum::v1::JobStatus;

// Starts accumd with its store refusing the next `refusals` FAILED transitions (one is tried
// every 100 ms), and submits a job whose first launch fails: the blocker holds the only slot,
// so the job waits in the queue while the test puts a file where its first attempt's log
// folder goes, and that launch cannot create its logs. Returns the job once accumd has kept
// the FAILED that the store refused (and *attempt_dir), or nullopt with the failure reported.
std::optional<JobStatus> fail_a_launch_unrecorded(DaemonHarness& daemon, int refusals,
                                                  std::string* attempt_dir) {
  DaemonOptions options = with_slots(1);
  options.extra_env = {"ACCUM_TEST_REFUSE_TRANSITIONS=FAILED:" + std::to_string(refusals)};
  if (!daemon.start(options)) return std::nullopt;
  JobStatus blocker, job;
  if (!daemon.submit(daemon.spec_json("blocker", 100000, 1, 0), &blocker).ok() ||
      !daemon.submit(daemon.spec_json("unlaunchable", 3, 1, 0), &job).ok()) {
    ADD_FAILURE() << "submit failed";
    return std::nullopt;
  }
  if (job.state() != accum::v1::QUEUED) {
    ADD_FAILURE() << "the job did not wait in the queue: " << job.message();
    return std::nullopt;
  }
  *attempt_dir = job.job_dir() + "/logs/attempt-1";
  std::ofstream(*attempt_dir) << "not a folder\n";
  if (!daemon.cancel(blocker.id(), /*force=*/true).ok()) {
    ADD_FAILURE() << "the blocker was not cancelled";
    return std::nullopt;
  }
  if (!wait_for_log(daemon, "the job store refused its new state FAILED",
                    std::chrono::seconds(20))) {
    ADD_FAILURE() << "the launch did not fail, or accumd dropped the FAILED the store refused; "
                  << "the job is " << accum::v1::JobState_Name(daemon.get(job.id()).state()) << ": "
                  << daemon.get(job.id()).message();
    return std::nullopt;
  }
  return job;
}

// Whether the job's stored history ends in an ended state (GetJob shows a pending end before).
bool end_is_stored(const JobStatus& job) {
  if (job.transitions_size() == 0) return false;
  JobStatus last;
  last.set_state(job.transitions(job.transitions_size() - 1).state());
  return ended(last);
}

TEST(DaemonSupervision, FailedLaunchIsRecordedOnceTheStoreTakesItAndNotRelaunched) {
  DaemonHarness daemon;
  std::string attempt_dir;
  // About 5 s of refused ticks, wide enough for the checks below.
  const auto unlaunchable = fail_a_launch_unrecorded(daemon, 50, &attempt_dir);
  ASSERT_TRUE(unlaunchable);
  const JobStatus& job = *unlaunchable;
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
  const JobStatus done = daemon.wait_for(job.id(), end_is_stored, std::chrono::seconds(30));
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

// While the FAILED of a launch that failed is not yet in the store, ContinueJob and DeleteJob
// say what GetJob says: the job failed to launch (not that it is STARTING, as the store still
// has it), that its end is not recorded yet, and to retry once the store takes writes. Once
// the store has taken it, the same DeleteJob goes through.
TEST(DaemonSupervision, ContinueAndDeleteOfAFailedLaunchNotYetRecordedSayHowItEnded) {
  DaemonHarness daemon;
  std::string attempt_dir;
  const auto job = fail_a_launch_unrecorded(daemon, 50, &attempt_dir);
  ASSERT_TRUE(job);
  const std::string ended_as =
      "already ended (FAILED: attempt 1 failed to launch: cannot create " + attempt_dir;
  {
    accum::v1::ContinueJobRequest request;
    request.set_id(job->id());
    accum::v1::SubmitJobResponse reply;
    const grpc::Status continued =
        daemon.stub().ContinueJob(daemon.context().get(), request, &reply);
    const std::string message = continued.error_message();
    EXPECT_EQ(continued.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << message;
    EXPECT_NE(message.find(ended_as), std::string::npos) << message;
    EXPECT_NE(message.find("not yet in the job store"), std::string::npos) << message;
    EXPECT_NE(message.find("continue it once the store takes writes"), std::string::npos)
        << message;
    EXPECT_EQ(message.find("STARTING"), std::string::npos) << message;
  }
  accum::v1::DeleteJobRequest request;
  request.set_id(job->id());
  accum::v1::DeleteJobResponse reply;
  {
    const grpc::Status deleted = daemon.stub().DeleteJob(daemon.context().get(), request, &reply);
    const std::string message = deleted.error_message();
    EXPECT_EQ(deleted.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << message;
    EXPECT_NE(message.find(ended_as), std::string::npos) << message;
    EXPECT_NE(message.find("not yet in the job store"), std::string::npos) << message;
    EXPECT_NE(message.find("delete it once the store takes writes"), std::string::npos) << message;
    EXPECT_EQ(message.find("STARTING"), std::string::npos) << message;
  }
  ASSERT_TRUE(std::filesystem::exists(job->job_dir())) << "deleted while its end was unrecorded";

  const JobStatus done = daemon.wait_for(job->id(), end_is_stored, std::chrono::seconds(30));
  ASSERT_EQ(done.state(), accum::v1::FAILED) << done.message();
  const grpc::Status deleted = daemon.stub().DeleteJob(daemon.context().get(), request, &reply);
  EXPECT_TRUE(deleted.ok()) << deleted.error_message();
  EXPECT_FALSE(std::filesystem::exists(job->job_dir()));
}

}  // namespace
}  // namespace accum::testing
