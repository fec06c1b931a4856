// A rank whose communicator setup fails ends the whole job at once: the other ranks,
// already past setup and waiting for it (in ncclCommInitRank on GPUs, in the first
// collective here), are not left to their collective timeout, and the failing rank does
// not sit in MPI_Finalize waiting for them. The failure is injected with the test-only
// ACCUM_TEST_FAIL_COMM_SETUP_RANK (comm/communicator.cpp).
#include <gtest/gtest.h>

#include <chrono>

#include "daemon/worker/exit_codes.h"
#include "tests/distributed/mpi_job.h"

namespace accum::testing {
namespace {

using Clock = std::chrono::steady_clock;
// Far longer than the test waits: only an abort can end the job in time.
constexpr int kCollectiveTimeoutS = 300;
constexpr int kWaitS = 60;

TEST(CommSetupFailureTest, OneRankFailingSetupEndsTheJobInsteadOfHanging) {
  MpiJobDir job;
  const std::string spec =
      job.write_spec("setup", {{"distributed.timeout_s", std::to_string(kCollectiveTimeoutS)}});
  const auto started = Clock::now();
  const RunResult result =
      run(mpirun_argv(2, spec, {"-x", "ACCUM_TEST_FAIL_COMM_SETUP_RANK=1"}), kWaitS);
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  EXPECT_LT(seconds, kWaitS - 1) << "mpirun had to be killed: the job hung\n" << result.output;
  EXPECT_EQ(result.exit_code, worker::kExitRuntimeFailure) << result.output;
  EXPECT_NE(result.output.find("communicator setup failed on rank 1 of 2"), std::string::npos)
      << result.output;
  EXPECT_EQ(read_metrics(job / "metrics.jsonl").size(), 0u) << "a step was taken";
  EXPECT_EQ(count_rank_processes(spec), 0) << "a rank outlived mpirun";
}

}  // namespace
}  // namespace accum::testing
