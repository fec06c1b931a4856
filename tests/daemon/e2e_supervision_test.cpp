// tests/daemon/e2e_supervision_test.cpp — the supervisor's edges, on a real accumd with
// real workers: accumd dying between spawning an attempt and recording it leaves one
// worker and a new attempt, not two copies of the old one; a checkpoint request whose
// attempt dies is answered at once; a worker that never says hello is restarted.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <optional>
#include <sstream>
#include <thread>

#include "gtest/gtest.h"
#include "tests/common/proc_stat.h"
#include "tests/daemon/daemon_harness.h"

namespace accum::testing {
namespace {

using accum::v1::JobStatus;
using Clock = std::chrono::steady_clock;

// The messages of the job's STARTING transitions ("attempt N on R ranks...").
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

// Starts accumd (one slot) and a job whose optimizer steps take seconds (K = 8192
// micro-batches of 2 x 32 tokens): a checkpoint request waits for the next step boundary,
// which a killed worker never reaches. Returns the job once it RUNS (its worker said hello),
// or nullopt with the failure reported.
std::optional<JobStatus> run_slow_step_job(DaemonHarness& daemon) {
  if (!daemon.start(with_slots(1))) return std::nullopt;
  std::string spec = daemon.spec_json("slow-steps", 100000, 1, 0, R"("max_restarts": 3)");
  const std::string tokens = R"("tokens_per_update": 256)";
  const auto at = spec.find(tokens);
  if (at == std::string::npos) {
    ADD_FAILURE() << "the harness's spec no longer says " << tokens << ": " << spec;
    return std::nullopt;
  }
  spec.replace(at, tokens.size(), R"("tokens_per_update": 524288)");
  JobStatus job;
  if (const grpc::Status submitted = daemon.submit(spec, &job); !submitted.ok()) {
    ADD_FAILURE() << "submit: " << submitted.error_message();
    return std::nullopt;
  }
  const JobStatus running = daemon.wait_for(
      job.id(), [](const JobStatus& j) { return j.state() == accum::v1::RUNNING || ended(j); });
  if (running.state() != accum::v1::RUNNING) {
    ADD_FAILURE() << "the slow job does not run: " << running.message();
    return std::nullopt;
  }
  return running;
}

struct CheckpointCall {
  grpc::Status status;
  accum::v1::CheckpointInfo info;
  std::chrono::milliseconds took{0};
};

// The worker dies with a checkpoint request in flight: the job goes to RESTARTING and the
// request dies with the old attempt, so CheckpointJob answers ABORTED at once instead of
// holding the caller until its deadline.
TEST(DaemonSupervision, CheckpointRequestIsAbortedWhenItsAttemptDies) {
  DaemonHarness daemon;
  const std::optional<JobStatus> job = run_slow_step_job(daemon);
  ASSERT_TRUE(job);
  const auto pids = daemon.worker_pids(job->job_dir());
  ASSERT_EQ(pids.size(), 1u);

  constexpr int kClientDeadlineS = 60;
  auto call = std::async(std::launch::async, [&] {
    accum::v1::CheckpointJobRequest request;
    request.set_id(job->id());
    CheckpointCall result;
    auto context = daemon.context(kClientDeadlineS);
    const auto started = Clock::now();
    result.status = daemon.stub().CheckpointJob(context.get(), request, &result.info);
    result.took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
    return result;
  });
  ASSERT_TRUE(
      wait_for_log(daemon, "checkpoint request 1 sent to attempt 1", std::chrono::seconds(30)))
      << "accumd never sent the checkpoint request";
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(kill(pids[0], SIGKILL), 0);

  const CheckpointCall result = call.get();
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::ABORTED)
      << result.status.error_message() << " (after " << result.took.count() << " ms)";
  EXPECT_NE(result.status.error_message().find("attempt 1 ended before the checkpoint was written"),
            std::string::npos)
      << result.status.error_message();
  EXPECT_LT(result.took, std::chrono::seconds(10))
      << "CheckpointJob held the caller for " << result.took.count() << " ms after the worker died";
  const JobStatus after = daemon.get(job->id());
  EXPECT_TRUE(after.state() == accum::v1::RESTARTING || after.state() == accum::v1::STARTING ||
              after.state() == accum::v1::RUNNING)
      << "the job should restart, but it is " << accum::v1::JobState_Name(after.state());
}

// A client that gives up on a CheckpointJob call stops accumd waiting on its behalf (the
// handler would otherwise hold a server thread until the checkpoint or its deadline).
TEST(DaemonSupervision, CheckpointWaitEndsWhenTheClientCancels) {
  DaemonHarness daemon;
  const std::optional<JobStatus> job = run_slow_step_job(daemon);
  ASSERT_TRUE(job);

  auto context = daemon.context(120);
  auto call = std::async(std::launch::async, [&] {
    accum::v1::CheckpointJobRequest request;
    request.set_id(job->id());
    accum::v1::CheckpointInfo info;
    return daemon.stub().CheckpointJob(context.get(), request, &info);
  });
  ASSERT_TRUE(
      wait_for_log(daemon, "checkpoint request 1 sent to attempt 1", std::chrono::seconds(30)))
      << "accumd never sent the checkpoint request";
  context->TryCancel();
  EXPECT_EQ(call.get().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(
      wait_for_log(daemon, "checkpoint request 1: the client went away", std::chrono::seconds(5)))
      << "accumd still waits for a checkpoint its client cancelled";
}

// The workers dial an address where no accumd listens, so rank 0's hello never arrives.
// Each attempt is killed after --hello-timeout-s and restarted like any failed attempt,
// until max_restarts runs out; without the deadline the job would sit in STARTING forever.
TEST(DaemonSupervision, WorkerThatNeverSaysHelloIsKilledAndRestarted) {
  DaemonHarness daemon;
  DaemonOptions options = with_slots(1);
  options.extra_args = {"--hello-timeout-s", "1", "--advertise", "127.0.0.1:1"};
  ASSERT_TRUE(daemon.start(options));
  JobStatus job;
  ASSERT_TRUE(
      daemon.submit(daemon.spec_json("unheard", 100000, 1, 0, R"("max_restarts": 1)"), &job).ok());
  const JobStatus done = daemon.wait_for(job.id(), ended, std::chrono::seconds(60));
  ASSERT_EQ(done.state(), accum::v1::FAILED) << done.message();
  EXPECT_EQ(done.restarts(), 1);
  EXPECT_NE(done.message().find("attempt 2: no hello from the worker for "), std::string::npos)
      << done.message();
  EXPECT_NE(done.message().find("(timeout 1 s)"), std::string::npos) << done.message();
  EXPECT_NE(done.message().find("no restarts left (1 of 1 used)"), std::string::npos)
      << done.message();
  int restarting = 0;
  for (const auto& t : done.transitions()) {
    EXPECT_NE(t.state(), accum::v1::RUNNING) << "no worker could have said hello";
    if (t.state() != accum::v1::RESTARTING) continue;
    ++restarting;
    EXPECT_NE(t.message().find("attempt 1: no hello from the worker for "), std::string::npos)
        << t.message();
  }
  EXPECT_EQ(restarting, 1);
  EXPECT_TRUE(daemon.worker_pids(done.job_dir()).empty()) << "a killed attempt still runs";
}

// A worker stopped by a SIGTERM accumd did not send (an administrator, a node going down)
// checkpoints and exits 0, as it does for accumd's own STOP. The job is not done: it
// restarts from that checkpoint and trains to max_steps, and never reads as SUCCEEDED
// partway.
TEST(DaemonSupervision, WorkerStoppedBySigtermFromOutsideRestartsInsteadOfSucceeding) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(1)));
  JobStatus job;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("outside-term", 120, 1, 0), &job).ok());
  const JobStatus running = daemon.wait_running(job.id(), 3);
  ASSERT_EQ(running.state(), accum::v1::RUNNING) << running.message();
  const auto pids = daemon.worker_pids(running.job_dir());
  ASSERT_EQ(pids.size(), 1u);
  ASSERT_EQ(kill(pids[0], SIGTERM), 0);

  const JobStatus done = daemon.wait_for(job.id(), ended, std::chrono::seconds(180));
  ASSERT_EQ(done.state(), accum::v1::SUCCEEDED) << done.message();
  EXPECT_EQ(done.last_metrics().step(), 120);
  EXPECT_EQ(done.restarts(), 1);
  int restarting = 0, succeeded = 0;
  for (const auto& t : done.transitions()) {
    if (t.state() == accum::v1::SUCCEEDED) ++succeeded;
    if (t.state() != accum::v1::RESTARTING) continue;
    ++restarting;
    EXPECT_NE(t.message().find("attempt 1: the worker exited 0 at checkpoint step "),
              std::string::npos)
        << t.message();
    EXPECT_NE(t.message().find(" of 120 without being asked to stop"), std::string::npos)
        << t.message();
  }
  EXPECT_EQ(restarting, 1);
  EXPECT_EQ(succeeded, 1);
}

// A complete checkpoint at max_steps ends the job SUCCEEDED even when the workers exit
// non-zero after it (a rank that fails in MPI_Finalize or NCCL's teardown): the training is
// done. Here a wrapper runs the real worker and then exits 1. Before, the job went to
// restarts (each attempt finding nothing to train) or, with max_restarts 0 as here, FAILED.
TEST(DaemonSupervision, NonZeroExitAfterTheFinalCheckpointStillSucceeds) {
  DaemonHarness daemon;
  const std::string wrapper = daemon.worker_failing_after_it();
  DaemonOptions options = with_slots(1);
  options.extra_args = {"--worker-bin", wrapper};
  ASSERT_TRUE(daemon.start(options));
  JobStatus job;
  ASSERT_TRUE(
      daemon.submit(daemon.spec_json("teardown-fails", 4, 1, 0, R"("max_restarts": 0)"), &job)
          .ok());
  const JobStatus done = daemon.wait_for(job.id(), ended, std::chrono::seconds(120));
  ASSERT_EQ(done.state(), accum::v1::SUCCEEDED) << done.message();
  EXPECT_NE(done.message().find("finished; latest checkpoint step 4 (after it, the workers ended "
                                "with exit code 1)"),
            std::string::npos)
      << done.message();
  EXPECT_EQ(done.latest_checkpoint_step(), 4);
  EXPECT_EQ(done.last_metrics().step(), 4);
  EXPECT_EQ(done.restarts(), 0);
}

// A launcher killed on its own leaves its worker to init. accumd restarts the job, and the
// orphan must not train on beside the next attempt in the same folders (nor after a
// cancel): it is killed when accumd sees the launcher end.
TEST(DaemonSupervision, WorkerOrphanedByItsKilledLauncherIsKilledBeforeTheNextAttempt) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(1)));
  JobStatus job;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("orphan", 100000, 1, 0), &job).ok());
  const JobStatus running = daemon.wait_running(job.id(), 3);
  ASSERT_EQ(running.state(), accum::v1::RUNNING) << running.message();
  const auto pids = daemon.worker_pids(running.job_dir());
  ASSERT_EQ(pids.size(), 1u);
  const pid_t orphan = pids[0];
  const pid_t launcher = read_proc_stat(orphan).parent;
  ASSERT_GT(launcher, 1);
  ASSERT_EQ(kill(launcher, SIGKILL), 0);

  const JobStatus again = daemon.wait_for(job.id(), [](const JobStatus& j) {
    return j.state() == accum::v1::RUNNING && j.restarts() == 1 && j.last_metrics().step() >= 1;
  });
  ASSERT_EQ(again.restarts(), 1) << again.message();
  const auto now = daemon.worker_pids(again.job_dir());
  EXPECT_EQ(now.size(), 1u) << "two attempts' workers train side by side";
  EXPECT_EQ(std::count(now.begin(), now.end(), orphan), 0) << "the orphan still runs";
  EXPECT_FALSE(process_running(orphan))
      << "pid " << orphan << " is in state " << read_proc_stat(orphan).state;
  std::string output;
  EXPECT_EQ(run_accumctl(daemon, {"cancel", job.id(), "--force"}, &output), 0) << output;
  daemon.wait_for(job.id(), ended);
  EXPECT_TRUE(daemon.worker_pids(again.job_dir()).empty());
}

}  // namespace
}  // namespace accum::testing
