// tests/daemon/e2e_supervision_test.cpp — the supervisor's edges, on a real accumd with
// real workers: accumd dying between spawning an attempt and recording it leaves one
// worker and a new attempt, not two copies of the old one.
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <optional>
#include <thread>

#include "gtest/gtest.h"
#include "tests/daemon/daemon_harness.h"

namespace accum::testing {
namespace {

using accum::v1::JobStatus;
using Clock = std::chrono::steady_clock;

bool ended(const JobStatus& job) {
  return job.state() == accum::v1::SUCCEEDED || job.state() == accum::v1::FAILED ||
         job.state() == accum::v1::CANCELLED;
}

// The messages of the job's STARTING transitions ("attempt N on R rank(s)...").
std::vector<std::string> launches(const JobStatus& job) {
  std::vector<std::string> messages;
  for (const auto& t : job.transitions()) {
    if (t.state() == accum::v1::STARTING) messages.push_back(t.message());
  }
  return messages;
}

// accumd dies (the test-only fault hook) right after spawning attempt 1, before it
// recorded the pid. The restarted accumd must kill that orphan before it serves, launch
// attempt 2 (not a second attempt 1 beside the first), and the job must finish with every
// step written once.
TEST(DaemonSupervision, CrashRightAfterSpawnLeavesOneWorkerAndANewAttempt) {
  DaemonHarness daemon;
  DaemonOptions crashing = with_slots(1);
  crashing.extra_env = {"ACCUM_TEST_EXIT_AFTER_SPAWN=1"};
  ASSERT_TRUE(daemon.start(crashing));
  constexpr int kSteps = 1500;
  // The submit launches at once and accumd exits inside it, so the reply is lost; the
  // first job of a fresh state dir is job-000001.
  (void)daemon.submit(daemon.spec_json("launched-twice", kSteps, 1, 100), nullptr);
  const std::optional<int> exit_status = daemon.wait_exit(std::chrono::seconds(30));
  ASSERT_TRUE(exit_status);
  ASSERT_TRUE(WIFEXITED(*exit_status) && WEXITSTATUS(*exit_status) == 86)
      << "accumd did not take the fault hook's exit (86); wait status " << *exit_status;
  const std::string id = "job-000001";
  const std::string job_dir = daemon.dir() + "/state/jobs/" + id;

  // The orphan of attempt 1 trains on with accumd gone.
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (read_metrics(job_dir + "/metrics.jsonl").size() < 3 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const auto orphans = daemon.worker_pids(job_dir);
  ASSERT_EQ(orphans.size(), 1u) << "the spawned attempt is not running";
  ASSERT_GE(read_metrics(job_dir + "/metrics.jsonl").size(), 3u) << "the orphan does not train";
  ASSERT_LT(read_metrics(job_dir + "/metrics.jsonl").size(), static_cast<size_t>(kSteps) / 2)
      << "the orphan is too fast for this test: it nearly finished before accumd came back";

  ASSERT_TRUE(daemon.start(with_slots(1)));
  // accumd kills the orphan before it serves, so it is gone by the time start() returns.
  const auto after_restart = daemon.worker_pids(job_dir);
  EXPECT_EQ(std::count(after_restart.begin(), after_restart.end(), orphans[0]), 0)
      << "the orphan of attempt 1 (pid " << orphans[0] << ") still runs after accumd restarted";
  const JobStatus running = daemon.wait_for(id, [](const JobStatus& j) {
    return (j.state() == accum::v1::RUNNING && j.last_metrics().step() >= 1) || ended(j);
  });
  ASSERT_EQ(running.state(), accum::v1::RUNNING) << running.message();
  const auto workers = daemon.worker_pids(job_dir);
  EXPECT_EQ(workers.size(), 1u) << "expected exactly one worker for " << id;

  const JobStatus done = daemon.wait_for(id, ended, std::chrono::seconds(180));
  ASSERT_EQ(done.state(), accum::v1::SUCCEEDED) << done.message();
  EXPECT_EQ(done.last_metrics().step(), kSteps);
  EXPECT_EQ(done.restarts(), 0) << "a launch cut short by accumd spends no restart";
  const auto started = launches(done);
  ASSERT_EQ(started.size(), 2u);
  EXPECT_EQ(started[0].rfind("attempt 1 ", 0), 0u) << started[0];
  EXPECT_EQ(started[1].rfind("attempt 2 ", 0), 0u) << started[1];
  EXPECT_TRUE(std::filesystem::exists(job_dir + "/logs/attempt-2"));
  const auto rows = read_metrics(job_dir + "/metrics.jsonl");
  ASSERT_EQ(rows.size(), static_cast<size_t>(kSteps)) << "steps written twice or missing";
  for (size_t k = 0; k < rows.size(); ++k) {
    ASSERT_EQ(rows[k].first, static_cast<int64_t>(k + 1)) << "at row " << k;
  }
}

}  // namespace
}  // namespace accum::testing
