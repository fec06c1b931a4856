// No silent hangs: SIGKILL one rank of a 4-rank job in the middle of training and the
// whole mpirun job ends non-zero within the collective timeout (distributed.timeout_s),
// leaving no rank behind. Twice: once with mpirun's own teardown (the default), once
// with it disabled, where the surviving ranks' collective timeout must end the job and
// name the rank and the optimizer step. And SIGKILL of mpirun itself: no rank outlives it.
// A graceful stop of a plain mpirun job (SIGUSR1 to mpirun) ends it with a checkpoint, exit 0.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <string>
#include <thread>

#include "daemon/worker/io/checkpoint_dir.h"
#include "tests/distributed/mpi_job.h"

namespace accum::testing {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kTimeoutS = 10;
// Teardown and MPI_Abort on a loaded 2-core machine; less than a second timeout, so a
// job that waits for the timeout twice (e.g. again while unwinding) fails the test.
constexpr int kSlackS = 8;

struct KilledJob {
  int exit_code = 0;
  double seconds_to_exit = 0;
  int steps_before_kill = 0;
  std::string output;
  int ranks_left = -1;
};

// A 4-rank job of 100000 steps under mpirun, once it has logged 2 steps (pid -1 if it never
// did within 120 s: then it is killed and `output` holds its log).
struct LongJob {
  pid_t mpirun = -1;
  std::string spec, log, output;
  int steps = 0;
};

LongJob start_long_job(const MpiJobDir& job, const std::vector<std::string>& extra_mpirun_args) {
  // Steps of a few hundred ms (K=4 micro-batches of 4 x 64 tokens on each rank), so
  // a kill lands inside an accumulation window.
  LongJob long_job;
  long_job.spec = job.write_spec("long", {{"model.d_model", "64"},
                                          {"model.max_seq_len", "64"},
                                          {"batch.seq_len", "64"},
                                          {"batch.micro_batch_size", "4"},
                                          {"batch.tokens_per_update", "4096"},
                                          {"max_steps", "100000"},
                                          {"distributed.timeout_s", std::to_string(kTimeoutS)},
                                          {"optimizer.schedule", "\"constant\""}});
  long_job.log = job / "mpirun.log";
  const pid_t mpirun = spawn(mpirun_argv(4, long_job.spec, extra_mpirun_args), long_job.log);
  const auto started = Clock::now();
  while (read_metrics(job / "metrics.jsonl").size() < 2 &&
         Clock::now() - started < std::chrono::seconds(120)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  long_job.steps = static_cast<int>(read_metrics(job / "metrics.jsonl").size());
  if (long_job.steps < 2) {
    kill(-mpirun, SIGKILL);
    wait_exit(mpirun, 30);
    long_job.output = read_file(long_job.log);
    return long_job;
  }
  long_job.mpirun = mpirun;
  return long_job;
}

// Kills what is left of a long job when a test ends, passed or failed: 100000-step ranks must
// not outlive a failed assertion.
struct RankCleanup {
  std::string spec;
  ~RankCleanup() {
    if (!spec.empty()) kill_rank_processes(spec);
  }
};

// How many ranks of `spec` are still alive after waiting up to `seconds` for none to be.
int ranks_left_after(const std::string& spec, double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (count_rank_processes(spec) > 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return count_rank_processes(spec);
}

KilledJob kill_rank_mid_run(const MpiJobDir& job, int victim,
                            const std::vector<std::string>& extra_mpirun_args) {
  const LongJob long_job = start_long_job(job, extra_mpirun_args);
  KilledJob result;
  result.steps_before_kill = long_job.steps;
  const pid_t victim_pid = long_job.mpirun > 0 ? find_rank_pid(long_job.spec, victim) : -1;
  if (victim_pid <= 0) {
    if (long_job.mpirun > 0) {
      kill(-long_job.mpirun, SIGKILL);
      wait_exit(long_job.mpirun, 30);
    }
    result.output = read_file(long_job.log);
    result.exit_code = -2;
    return result;
  }
  const auto killed_at = Clock::now();
  kill(victim_pid, SIGKILL);
  result.exit_code = wait_exit(long_job.mpirun, kTimeoutS + kSlackS);  // -1: we had to kill it
  result.seconds_to_exit = std::chrono::duration<double>(Clock::now() - killed_at).count();
  // mpirun has exited; give the OS a moment to reap what it tore down.
  result.ranks_left = ranks_left_after(long_job.spec, 5);
  result.output = read_file(long_job.log);
  return result;
}

TEST(RankFailureTest, SigkillOfOneRankEndsTheWholeJobNonZero) {
  MpiJobDir job;
  const KilledJob killed = kill_rank_mid_run(job, /*victim=*/2, {});
  ASSERT_NE(killed.exit_code, -2) << "the job never reached 2 steps or rank 2 was not found:\n"
                                  << killed.output;
  EXPECT_NE(killed.exit_code, -1) << "mpirun still running " << kTimeoutS + kSlackS
                                  << " s after the kill:\n"
                                  << killed.output;
  EXPECT_NE(killed.exit_code, 0) << killed.output;
  EXPECT_LT(killed.seconds_to_exit, kTimeoutS + kSlackS);
  EXPECT_EQ(killed.ranks_left, 0) << "surviving ranks outlived mpirun";
}

TEST(RankFailureTest, WithoutMpirunTeardownTheCollectiveTimeoutEndsTheJob) {
  MpiJobDir job;
  const KilledJob killed =
      kill_rank_mid_run(job, /*victim=*/3, {"--mca", "orte_abort_on_non_zero_status", "0"});
  ASSERT_NE(killed.exit_code, -2) << "the job never reached 2 steps or rank 3 was not found:\n"
                                  << killed.output;
  EXPECT_NE(killed.exit_code, -1) << "mpirun still running " << kTimeoutS + kSlackS
                                  << " s after the kill:\n"
                                  << killed.output;
  EXPECT_NE(killed.exit_code, 0) << killed.output;
  EXPECT_LT(killed.seconds_to_exit, kTimeoutS + kSlackS);
  // It was a survivor's timeout that ended it, not an immediate teardown, and it says
  // which rank gave up at which optimizer step.
  // (Survivors may already have waited part of a step for the victim when it died.)
  EXPECT_GE(killed.seconds_to_exit, kTimeoutS * 0.7);
  EXPECT_TRUE(std::regex_search(
      killed.output,
      std::regex("rank [0-2] of 4 aborting the job at optimizer step [0-9]+.*timed out")))
      << killed.output;
  EXPECT_EQ(killed.ranks_left, 0) << "surviving ranks outlived mpirun";
}

// The launcher itself killed (as accumd's sweep of an attempt it cannot re-attach to kills it,
// job_supervision.cpp): every rank ends on its own within seconds, with no teardown by
// mpirun and no collective timeout, since Open MPI ends a rank whose launcher is gone. On a
// cluster, each host's orted loses mpirun the same way and takes its ranks with it; this test
// can only show the ranks of this host.
TEST(RankFailureTest, SigkillOfMpirunLeavesNoRankBehind) {
  MpiJobDir job;
  const LongJob long_job = start_long_job(job, {});
  const RankCleanup cleanup{long_job.spec};
  ASSERT_GT(long_job.mpirun, 0) << "the job never reached 2 steps:\n" << long_job.output;
  ASSERT_EQ(count_rank_processes(long_job.spec), 4);
  const auto killed_at = Clock::now();
  kill(long_job.mpirun, SIGKILL);  // mpirun alone, not its process group
  EXPECT_EQ(wait_exit(long_job.mpirun, 10), 128 + SIGKILL) << "mpirun did not die of SIGKILL";
  // Well under the 10 s collective timeout: the ranks did not wait for it.
  EXPECT_EQ(ranks_left_after(long_job.spec, kTimeoutS * 0.8), 0)
      << "ranks outlived their launcher:\n"
      << read_file(long_job.log);
  const double seconds = std::chrono::duration<double>(Clock::now() - killed_at).count();
  EXPECT_LT(seconds, kTimeoutS * 0.8);
  const size_t steps = read_metrics(job / "metrics.jsonl").size();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  EXPECT_EQ(read_metrics(job / "metrics.jsonl").size(), steps) << "training went on";
}

// A user who launched the ranks with mpirun and wants them to stop with a checkpoint:
// mpirun's own SIGINT/SIGTERM kill the ranks a second later, so the worker also stops on
// SIGUSR1, which Open MPI forwards to every rank. Each finishes its optimizer step, they
// checkpoint it together, and mpirun exits 0.
TEST(GracefulStopTest, SigusrOneToMpirunCheckpointsTheStepAndExitsZero) {
  MpiJobDir job;
  const LongJob long_job = start_long_job(job, {});
  const RankCleanup cleanup{long_job.spec};
  ASSERT_GT(long_job.mpirun, 0) << "the job never reached 2 steps:\n" << long_job.output;
  ASSERT_EQ(kill(long_job.mpirun, SIGUSR1), 0);
  ASSERT_EQ(wait_exit(long_job.mpirun, 120), 0) << read_file(long_job.log);
  EXPECT_EQ(ranks_left_after(long_job.spec, 5), 0);
  const auto metrics = read_metrics(job / "metrics.jsonl");
  ASSERT_FALSE(metrics.empty());
  const auto checkpoints = io::list_checkpoints(job / "ckpt");
  ASSERT_FALSE(checkpoints.empty()) << read_file(long_job.log);
  EXPECT_EQ(checkpoints.back().first, metrics.back().step);  // the step it finished
  EXPECT_TRUE(io::verify_checkpoint(checkpoints.back().second).ok());
  EXPECT_NE(read_file(long_job.log)
                .find("stopped at step " + std::to_string(metrics.back().step) + " (checkpointed)"),
            std::string::npos)
      << read_file(long_job.log);
}

// A stand-in for a second host: an ssh for mpirun (its plm_rsh_agent) that runs the command
// on this machine in a UTS namespace named after the host, the way ssh would run it there: mpirun
// starts an orted "on" the host and the orted starts that host's ranks, as on a cluster. Returns
// the agent's path, or "" with `why` when `unshare --uts` is not allowed here (it needs root).
std::string second_host_agent(const MpiJobDir& job, std::string* why) {
  // Open MPI 4's launcher (ORTE): mpirun starts an `orted` per host through plm_rsh_agent.
  const std::string version = run({mpirun_argv(1, "")[0], "--version"}, 30).output;
  if (version.find("(OpenRTE) 4.") == std::string::npos &&
      version.find("(Open MPI) 4.") == std::string::npos) {
    *why = "the stand-in second host needs Open MPI 4's orted and plm_rsh_agent";
    return "";
  }
  if (std::system("unshare --uts true > /dev/null 2>&1") != 0) {
    *why = "needs `unshare --uts` (root) to stand in for a second host, and it was refused here";
    return "";
  }
  const std::string agent = job / "fake_ssh";
  write_file(agent,
             "#!/bin/bash\n"
             "# mpirun's ssh: HOST COMMAND..., run here under HOST's name; eval, as a remote\n"
             "# shell parses the command line ssh hands it.\n"
             "host=\"$1\"; shift\n"
             "exec unshare --uts bash -c 'hostname \"$0\"; eval \"$*\"' \"$host\" \"$@\"\n");
  std::filesystem::permissions(agent, std::filesystem::perms::owner_all);
  return agent;
}

// The same for ranks on another host: when mpirun dies, that host's orted loses it, ends, and
// its ranks end with it. This is what the sweep of a restarted accumd relies on for the hosts it
// cannot see (job_supervision.cpp kills only what runs on its own host).
TEST(RankFailureTest, RanksOnAnotherHostEndWhenMpirunIsKilled) {
  MpiJobDir job;
  std::string why;
  const std::string agent = second_host_agent(job, &why);
  if (agent.empty()) GTEST_SKIP() << why;
  write_file(job / "hosts", "hostb slots=4\n");
  const LongJob long_job =
      start_long_job(job, {"--hostfile", job / "hosts", "--mca", "plm_rsh_agent", agent});
  const RankCleanup cleanup{long_job.spec};
  ASSERT_GT(long_job.mpirun, 0) << "the job never reached 2 steps:\n" << long_job.output;
  ASSERT_EQ(count_rank_processes(long_job.spec), 4);
  // The ranks run "on hostb": under an orted that the agent started in another UTS namespace,
  // not as mpirun's children.
  const pid_t rank0 = find_rank_pid(long_job.spec, 0);
  ASSERT_GT(rank0, 0);
  const pid_t orted = read_proc_stat(rank0).parent;
  ASSERT_GT(orted, 0);
  EXPECT_NE(orted, long_job.mpirun);
  EXPECT_NE(read_file("/proc/" + std::to_string(orted) + "/cmdline").find("orted"),
            std::string::npos);
  std::error_code error;
  EXPECT_NE(std::filesystem::read_symlink("/proc/" + std::to_string(rank0) + "/ns/uts", error),
            std::filesystem::read_symlink("/proc/self/ns/uts", error));
  kill(long_job.mpirun, SIGKILL);  // mpirun alone: the other host's processes are not its group
  EXPECT_EQ(wait_exit(long_job.mpirun, 10), 128 + SIGKILL);
  EXPECT_EQ(ranks_left_after(long_job.spec, kTimeoutS * 0.8), 0)
      << "ranks on the other host outlived mpirun";
  for (int i = 0; i < 100 && process_running(orted); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_FALSE(process_running(orted)) << "the other host's orted outlived mpirun";
}

}  // namespace
}  // namespace accum::testing
