// No silent hangs: SIGKILL one rank of a 4-rank job in the middle of training and the
// whole mpirun job ends non-zero within the collective timeout (distributed.timeout_s),
// leaving no rank behind. Twice: once with mpirun's own teardown (the default), once
// with it disabled, where the surviving ranks' collective timeout must end the job and
// name the rank and the optimizer step.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <regex>
#include <thread>

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

KilledJob kill_rank_mid_run(const MpiJobDir& job, int victim,
                            const std::vector<std::string>& extra_mpirun_args) {
  // Steps of a few hundred ms (K=4 micro-batches of 4 x 64 tokens on each rank), so
  // the kill lands inside an accumulation window.
  const std::string spec =
      job.write_spec("long", {{"model.d_model", "64"},
                              {"model.max_seq_len", "64"},
                              {"batch.seq_len", "64"},
                              {"batch.micro_batch_size", "4"},
                              {"batch.tokens_per_update", "4096"},
                              {"max_steps", "100000"},
                              {"distributed.timeout_s", std::to_string(kTimeoutS)},
                              {"optimizer.schedule", "\"constant\""}});
  const std::string log = job / "mpirun.log";
  const pid_t mpirun = spawn(mpirun_argv(4, spec, extra_mpirun_args), log);
  KilledJob result;
  const auto started = Clock::now();
  while (read_metrics(job / "metrics.jsonl").size() < 2 &&
         Clock::now() - started < std::chrono::seconds(120)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  result.steps_before_kill = static_cast<int>(read_metrics(job / "metrics.jsonl").size());
  const pid_t victim_pid = find_rank_pid(spec, victim);
  if (result.steps_before_kill < 2 || victim_pid <= 0) {
    kill(-mpirun, SIGKILL);
    wait_exit(mpirun, 30);
    result.output = read_file(log);
    result.exit_code = -2;
    return result;
  }
  const auto killed_at = Clock::now();
  kill(victim_pid, SIGKILL);
  result.exit_code = wait_exit(mpirun, kTimeoutS + kSlackS);  // -1: we had to kill it
  result.seconds_to_exit = std::chrono::duration<double>(Clock::now() - killed_at).count();
  // mpirun has exited; give the OS a moment to reap what it tore down.
  for (int i = 0; i < 100 && count_rank_processes(spec) > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  result.ranks_left = count_rank_processes(spec);
  result.output = read_file(log);
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

}  // namespace
}  // namespace accum::testing
