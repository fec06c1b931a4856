// tests/daemon/e2e_recovery_pending_test.cpp — what accumd had pending when it died, finished
// by the accumd restarted on its state dir as the first would have finished it: a force cancel
// (killed, not stopped gracefully; its half-written checkpoint folders removed), whether it
// died before or after sending the SIGKILL; and a restart's backoff (its remainder waited
// out, not dropped). The first accumd dies at the chosen point through a test-only fault hook
// (ACCUM_TEST_EXIT_IN_FORCE_CANCEL, exit code 86), or by SIGKILL.
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/daemon/daemon_harness.h"

namespace accum::testing {
namespace {

namespace fs = std::filesystem;
using accum::v1::JobStatus;

// The names in the job's checkpoint folder that start with `prefix`.
std::vector<std::string> checkpoint_entries(const std::string& job_dir, const std::string& prefix) {
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(job_dir + "/checkpoints", error)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) == 0) names.push_back(name);
  }
  return names;
}

// A running job of two ranks under mpirun (no scheduled checkpoints) with a half-written
// checkpoint folder, named as its rank 0 names one it is writing; an accumd whose fault hook
// `exit_point` ends it inside the force cancel of that job. Returns the job, or nullopt with the
// failure reported.
std::optional<JobStatus> force_cancel_and_die(DaemonHarness& daemon, const std::string& exit_point,
                                              std::string* partial) {
  DaemonOptions dying = with_slots(2);
  dying.extra_env = {"ACCUM_TEST_EXIT_IN_FORCE_CANCEL=" + exit_point};
  if (!daemon.start(dying)) return std::nullopt;
  JobStatus job;
  if (!daemon.submit(daemon.spec_json("forced", 100000, 2, 0), &job).ok()) {
    ADD_FAILURE() << "submit failed";
    return std::nullopt;
  }
  const JobStatus running = daemon.wait_running(job.id(), 3);
  if (running.state() != accum::v1::RUNNING) {
    ADD_FAILURE() << "not running: " << running.message();
    return std::nullopt;
  }
  const auto pids = daemon.worker_pids(running.job_dir());
  if (pids.size() != 2u) {
    ADD_FAILURE() << pids.size() << " workers";
    return std::nullopt;
  }
  *partial = absl::StrCat(running.job_dir(), "/checkpoints/.tmp-step_00099999-", pids[0]);
  fs::create_directories(*partial);
  std::ofstream(*partial + "/model.safetensors") << "half";

  (void)daemon.cancel(job.id(), /*force=*/true);  // accumd exits inside it
  const std::optional<int> exit_status = daemon.wait_exit(std::chrono::seconds(30));
  if (!exit_status || !WIFEXITED(*exit_status) || WEXITSTATUS(*exit_status) != 86) {
    ADD_FAILURE() << "accumd did not take the fault hook's exit (86)";
    return std::nullopt;
  }
  return running;
}

// Expects the job the restarted accumd settles to end as a force cancel does: CANCELLED by
// "force_cancel", "killed (...)", no worker left, no partial checkpoint, and no final
// checkpoint (a graceful stop would have written one).
void expect_finished_as_a_force_cancel(DaemonHarness& daemon, const JobStatus& running,
                                       const std::string& partial) {
  const JobStatus done = daemon.wait_for(running.id(), ended, std::chrono::seconds(30));
  ASSERT_EQ(done.state(), accum::v1::CANCELLED) << done.message();
  ASSERT_GT(done.transitions_size(), 0);
  const auto& last = done.transitions(done.transitions_size() - 1);
  EXPECT_EQ(last.reason(), "force_cancel") << last.message();
  EXPECT_EQ(done.message().rfind("killed (workers ended with ", 0), 0u) << done.message();
  EXPECT_TRUE(daemon.worker_pids(done.job_dir()).empty()) << "a worker outlived the cancel";
  EXPECT_FALSE(fs::exists(partial)) << "the half-written checkpoint was left: " << partial;
  EXPECT_TRUE(checkpoint_entries(done.job_dir(), "step_").empty())
      << "a final checkpoint was written: the job was stopped gracefully";
  EXPECT_EQ(done.restarts(), 0);
}

// accumd records the force cancel (CANCELLING) and dies before it sends the SIGKILL: the
// workers train on. The restarted accumd re-attaches to them and kills them, as the first would
// have; it neither asks them for a graceful stop nor waits out a stop grace. Its record names
// the kill as the first accumd's would (the signal), and says that the restarted accumd sent
// it: not "an unknown status", although the killed launcher left no exit code.
TEST(DaemonRecovery, ForceCancelRecordedButNotSentIsFinishedByTheRestartedAccumd) {
  DaemonHarness daemon;
  std::string partial;
  const auto running = force_cancel_and_die(daemon, "before_kill", &partial);
  ASSERT_TRUE(running);
  ASSERT_EQ(daemon.worker_pids(running->job_dir()).size(), 2u) << "the workers were killed";
  ASSERT_TRUE(daemon.start(with_slots(2)));
  expect_finished_as_a_force_cancel(daemon, *running, partial);
  const JobStatus done = daemon.get(running->id());
  EXPECT_EQ(done.message().rfind("killed (workers ended with signal 9 (Killed), sent by accumd "
                                 "after it restarted); latest checkpoint step 0",
                                 0),
            0u)
      << done.message();
  EXPECT_EQ(done.message().find("unknown status"), std::string::npos) << done.message();
}

// Two cancels, one forced and one graceful, whose workers ended and whose CANCELLED the store
// refused (as a full disk would) when accumd was killed: the restarted accumd finds both
// CANCELLING with no process, and records each as its cancel would have, with the cancel's
// reason (force_cancel, cancel) and a message that says no worker was running.
TEST(DaemonRecovery, CancelWhoseEndWasNotRecordedKeepsItsReasonAcrossAnAccumdRestart) {
  DaemonHarness daemon;
  DaemonOptions refusing = with_slots(2);
  refusing.extra_env = {"ACCUM_TEST_REFUSE_TRANSITIONS=CANCELLED:1000000"};
  ASSERT_TRUE(daemon.start(refusing));
  JobStatus forced, graceful;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("forced", 100000, 1, 0), &forced).ok());
  ASSERT_TRUE(daemon.submit(daemon.spec_json("graceful", 100000, 1, 0), &graceful).ok());
  ASSERT_EQ(daemon.wait_running(forced.id(), 2).state(), accum::v1::RUNNING);
  ASSERT_EQ(daemon.wait_running(graceful.id(), 2).state(), accum::v1::RUNNING);
  ASSERT_TRUE(daemon.cancel(forced.id(), /*force=*/true).ok());
  ASSERT_TRUE(daemon.cancel(graceful.id(), /*force=*/false).ok());
  // Their exits are handled (GetJob shows the CANCELLED the store has not taken), and the
  // store still says CANCELLING.
  for (const std::string& id : {forced.id(), graceful.id()}) {
    const JobStatus pending = daemon.wait_for(
        id, [](const JobStatus& j) { return j.state() == accum::v1::CANCELLED; },
        std::chrono::seconds(60));
    ASSERT_EQ(pending.state(), accum::v1::CANCELLED) << pending.message();
    ASSERT_NE(pending.message().find("not yet in the job store"), std::string::npos)
        << pending.message();
    ASSERT_TRUE(daemon.worker_pids(pending.job_dir()).empty());
  }
  daemon.kill9();
  ASSERT_TRUE(daemon.start(with_slots(2)));

  for (const auto& [id, reason] :
       {std::pair{forced.id(), "force_cancel"}, std::pair{graceful.id(), "cancel"}}) {
    SCOPED_TRACE(reason);
    const JobStatus done = daemon.wait_for(id, ended, std::chrono::seconds(30));
    ASSERT_EQ(done.state(), accum::v1::CANCELLED) << done.message();
    EXPECT_EQ(transition_states(done),
              (std::vector<accum::v1::JobState>{accum::v1::QUEUED, accum::v1::STARTING,
                                                accum::v1::RUNNING, accum::v1::CANCELLING,
                                                accum::v1::CANCELLED}));
    const auto& last = done.transitions(done.transitions_size() - 1);
    EXPECT_EQ(last.reason(), reason) << last.message();
    EXPECT_EQ(last.message().rfind("no worker was running when accumd restarted", 0), 0u)
        << last.message();
  }
}

// accumd sends the SIGKILL of a force cancel and dies before it handles the workers' exit.
// The restarted accumd finds them gone and records what the first would have: a force
// cancel, with the half-written checkpoint removed.
TEST(DaemonRecovery, ForceCancelWhoseExitAccumdMissedEndsAsAForceCancel) {
  DaemonHarness daemon;
  std::string partial;
  const auto running = force_cancel_and_die(daemon, "after_kill", &partial);
  ASSERT_TRUE(running);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!daemon.worker_pids(running->job_dir()).empty() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(daemon.worker_pids(running->job_dir()).empty()) << "the SIGKILL was not sent";
  ASSERT_TRUE(fs::exists(partial));
  ASSERT_TRUE(daemon.start(with_slots(2)));
  expect_finished_as_a_force_cancel(daemon, *running, partial);
}

// A job waits out its restart backoff (8 s here) when accumd is killed, 2 s into it, and
// started again 2 s later. The restarted accumd relaunches when the backoff recorded with
// RESTARTING is due: not at once (what was left of it dropped), and not a whole backoff
// after its own start (the time it was down counted twice).
TEST(DaemonRecovery, RestartBackoffIsWaitedOutAcrossAnAccumdRestart) {
  constexpr int64_t kBackoffMs = 8000;
  DaemonHarness daemon;
  DaemonOptions options = with_slots(1);
  options.extra_args = {"--restart-backoff-ms", std::to_string(kBackoffMs)};
  ASSERT_TRUE(daemon.start(options));
  JobStatus job;
  ASSERT_TRUE(
      daemon.submit(daemon.spec_json("patient", 100000, 1, 0, R"("max_restarts": 3)"), &job).ok());
  const JobStatus running = daemon.wait_running(job.id(), 2);
  ASSERT_EQ(running.state(), accum::v1::RUNNING) << running.message();
  const auto pids = daemon.worker_pids(running.job_dir());
  ASSERT_EQ(pids.size(), 1u);
  ASSERT_EQ(kill(pids[0], SIGKILL), 0);
  const JobStatus waiting = daemon.wait_for(
      job.id(), [](const JobStatus& j) { return j.state() == accum::v1::RESTARTING || ended(j); });
  ASSERT_EQ(waiting.state(), accum::v1::RESTARTING) << waiting.message();
  ASSERT_NE(waiting.message().find(absl::StrCat(" in ", kBackoffMs, " ms")), std::string::npos)
      << waiting.message();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  daemon.kill9();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  ASSERT_TRUE(daemon.start(options));

  const JobStatus relaunched = daemon.wait_for(
      job.id(), [](const JobStatus& j) { return j.state() != accum::v1::RESTARTING; },
      std::chrono::seconds(30));
  ASSERT_TRUE(relaunched.state() == accum::v1::STARTING || relaunched.state() == accum::v1::RUNNING)
      << relaunched.message();
  int64_t restarting_ms = 0, relaunch_ms = 0;
  for (const auto& t : relaunched.transitions()) {
    if (t.state() == accum::v1::RESTARTING) restarting_ms = t.time_unix_ms();
    if (t.state() == accum::v1::STARTING && restarting_ms > 0) relaunch_ms = t.time_unix_ms();
  }
  ASSERT_GT(restarting_ms, 0);
  ASSERT_GT(relaunch_ms, 0) << "no launch after RESTARTING";
  const int64_t waited_ms = relaunch_ms - restarting_ms;
  // The due time is taken just before RESTARTING is recorded; a tick is 100 ms.
  EXPECT_GE(waited_ms, kBackoffMs - 500) << "the rest of the backoff was dropped";
  EXPECT_LE(waited_ms, kBackoffMs + 2500) << "the backoff started over at the restart";
  std::string output;
  EXPECT_EQ(run_accumctl(daemon, {"cancel", job.id(), "--force"}, &output), 0) << output;
}

// A worker dies and the store refuses the RESTARTING accumd records for it (the test-only
// ACCUM_TEST_REFUSE_TRANSITIONS, as a full disk would): GetJob shows RESTARTING, the state
// the job is in, and so do the refusals of continue, delete and checkpoint, which used to name
// the stored RUNNING.
TEST(DaemonRecovery, ARestartTheStoreRefusedIsTheStateRefusalsName) {
  DaemonHarness daemon;
  DaemonOptions refusing = with_slots(1);
  refusing.extra_env = {"ACCUM_TEST_REFUSE_TRANSITIONS=RESTARTING:150"};  // about 15 s of ticks
  ASSERT_TRUE(daemon.start(refusing));
  JobStatus job;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("pending-restart", 100000, 1, 0), &job).ok());
  const JobStatus running = daemon.wait_running(job.id(), 2);
  ASSERT_EQ(running.state(), accum::v1::RUNNING) << running.message();
  const auto pids = daemon.worker_pids(running.job_dir());
  ASSERT_EQ(pids.size(), 1u);
  ASSERT_EQ(kill(pids[0], SIGKILL), 0);
  ASSERT_TRUE(wait_for_log(daemon, "the job store refused its new state RESTARTING",
                           std::chrono::seconds(60)));
  EXPECT_EQ(daemon.get(job.id()).state(), accum::v1::RESTARTING);
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"continue", job.id()}, {"delete", job.id()}, {"checkpoint", job.id()}}) {
    std::string output;
    EXPECT_EQ(run_accumctl(daemon, args, &output), 7) << args[0] << ": " << output;
    EXPECT_NE(output.find("job " + job.id() + " is RESTARTING"), std::string::npos)
        << args[0] << ": " << output;
    EXPECT_EQ(output.find("is RUNNING"), std::string::npos) << args[0] << ": " << output;
  }
  ASSERT_TRUE(daemon.cancel(job.id(), /*force=*/true).ok());
}

}  // namespace
}  // namespace accum::testing
