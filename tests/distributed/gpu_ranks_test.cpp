// The real accum-worker on 2 GPUs under mpirun (device CUDA: the NCCL back end): 2 ranks
// x K micro-batches train like 1 GPU x 2K micro-batches, with ZeRO-1 or without, and the
// optimizer state of ZeRO-1 is sharded. Label gpu: SKIPPED with the reason unless this
// node has a GPU per rank. Built for the SIMT emulator (tests/simt) it runs in every CI
// run: two emulated GPUs per node, the emulated NCCL's collectives going over MPI.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "daemon/worker/exit_codes.h"
#include "kernels/backend.h"
#include "tests/distributed/mpi_job.h"

#if defined(ACCUM_HAVE_CUDA)
#include <cuda_runtime.h>
#endif

namespace accum::testing {
namespace {

constexpr int kRanks = 2;

// Why this node cannot run kRanks GPU ranks, or "".
std::string unavailable_reason() {
  std::string why;
  if (!kernels::backend_available(kernels::DeviceKind::kCuda, &why)) return why;
#if defined(ACCUM_HAVE_CUDA)
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices < kRanks) {
    return "needs " + std::to_string(kRanks) + " GPUs on this node (NCCL wants one per rank), " +
           "found " + std::to_string(devices);
  }
#endif
  return "";
}

// Runs accum-worker on GPU ranks: the SIMT build's worker and emulated GPUs where this
// test is built for the emulator; SKIPPED unless this node has a GPU per rank.
class GpuJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
#ifdef ACCUM_WORKER_BINARY_DEFAULT
    // The SIMT build: its worker, and two emulated GPUs for every process of the job.
    setenv("ACCUM_WORKER_BINARY", ACCUM_WORKER_BINARY_DEFAULT, 0);
    setenv("ACCUM_SIMT_DEVICES", "2", 0);
    mpirun_args_ = {"-x", "ACCUM_SIMT_DEVICES"};
#endif
    const std::string why = unavailable_reason();
    if (!why.empty()) GTEST_SKIP() << why;
  }

  // A job of `max_steps` on kRanks GPU ranks with a 2 s collective timeout and `fault`
  // (VAR=VALUE) in every rank's environment, which must end it: the job ends by itself well
  // within kFaultWaitS (else mpirun is killed, and this fails the test), no rank outlives it.
  static constexpr int kFaultWaitS = 60;
  RunResult run_faulty_job(MpiJobDir& job, const std::string& name, int max_steps,
                           const std::string& fault) {
    const std::string spec = job.write_spec(name, {{"device", "\"CUDA\""},
                                                   {"precision", "\"BF16\""},
                                                   {"max_steps", std::to_string(max_steps)},
                                                   {"distributed.timeout_s", "2"}});
    std::vector<std::string> args = mpirun_args_;
    args.insert(args.end(), {"-x", fault});
    const auto started = std::chrono::steady_clock::now();
    const RunResult result = run(mpirun_argv(kRanks, spec, args), kFaultWaitS);
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
    EXPECT_LT(took.count(), kFaultWaitS - 1) << "mpirun had to be killed: the job hung\n"
                                             << result.output;
    EXPECT_EQ(count_rank_processes(spec), 0) << "a rank outlived mpirun";
    return result;
  }
  std::vector<std::string> mpirun_args_;
};

class GpuRanksTest : public GpuJobTest, public ::testing::WithParamInterface<int> {
 protected:
  Overrides spec(const std::string& tag, Overrides more) const {
    more["device"] = "\"CUDA\"";
    more["precision"] = "\"BF16\"";
    more["batch.tokens_per_update"] = "256";  // B=2, T=16: K = 8 on 1 rank, 4 on 2
    more["max_steps"] = "4";
    more["distributed.zero_stage"] = std::to_string(GetParam());
    return outputs_for(tag, more);
  }
  RunResult train(const MpiJobDir& job, const std::string& name, int ranks) const {
    return run(mpirun_argv(ranks, job.write_spec(name, spec(name, {})), mpirun_args_), 240);
  }
};

TEST_P(GpuRanksTest, TwoGpusTrainLikeOneWithTwiceTheMicroBatches) {
  MpiJobDir job;
  auto one = train(job, "one", 1);
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto two = train(job, "two", kRanks);
  ASSERT_EQ(two.exit_code, 0) << two.output;
  EXPECT_NE(two.output.find("NCCL"), std::string::npos) << "not the NCCL back end:\n" << two.output;
  const auto a = read_metrics(job / "one.jsonl"), b = read_metrics(job / "two.jsonl");
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    SCOPED_TRACE("step " + std::to_string(i + 1));
    EXPECT_EQ(metric_value(b[i], "world_size"), kRanks);
    EXPECT_EQ(metric_value(b[i], "grad_accum_steps"), 4);
    EXPECT_EQ(b[i].tokens, 256);
    // bf16 activations, fp32 accumulation and reduction: only summation order differs.
    EXPECT_NEAR(b[i].loss, a[i].loss, 1e-3 * a[i].loss);
  }
  EXPECT_LE(relative_l2(read_weights(job / "ckpt_two/step_00000004/model.safetensors"),
                        read_weights(job / "ckpt_one/step_00000004/model.safetensors")),
            1e-3);
}

INSTANTIATE_TEST_SUITE_P(ZeroStage, GpuRanksTest, ::testing::Values(0, 1),
                         [](const auto& info) { return "stage" + std::to_string(info.param); });

// A rank that never arrives at NCCL's setup (hung, or unable to reach rank 0) must not
// leave the others waiting in it for ever: ncclCommInitRank and the ncclUniqueId
// broadcast have no deadline, so the setup has a watchdog (distributed.timeout_s) that
// ends the whole job, saying where the waiting rank waits. The stall is the test-only
// ACCUM_TEST_STALL_NCCL_SETUP_RANK (comm/nccl_comm.cpp).
TEST_F(GpuJobTest, ARankThatNeverJoinsNcclSetupEndsTheJobAtTheTimeout) {
  MpiJobDir job;
  const RunResult result = run_faulty_job(job, "stall", 2, "ACCUM_TEST_STALL_NCCL_SETUP_RANK=1");
  EXPECT_EQ(result.exit_code, worker::kExitRuntimeFailure) << result.output;
  EXPECT_NE(result.output.find("NCCL setup did not finish within 2000 ms (distributed.timeout_s) "
                               "on rank 0 of 2: it waits for every rank to join the communicator "
                               "(ncclCommInitRank)"),
            std::string::npos)
      << result.output;
  EXPECT_EQ(read_metrics(job / "metrics.jsonl").size(), 0u) << "a step was taken";
}

// A collective that never completes (a rank that died or hangs inside NCCL leaves the others'
// kernels waiting) must end the job at the collective timeout (distributed.timeout_s), the
// NCCL communicator aborted so that no kernel stays stuck, saying which collective timed out.
// The hang is the emulated NCCL's test-only fault (ACCUM_SIMT_NCCL_HANG_AFTER: every
// collective after the first n never completes), so this runs on emulated GPUs only. Six
// collectives in (the ranks' agreements on rank 0's link, on the setup and on the resume
// (train/failure_agreement.h), the setup's check, and step 1's gradient and loss
// reductions), step 2's gradient all-reduce hangs.
TEST_F(GpuJobTest, ACollectiveThatNeverCompletesEndsTheJobAtTheTimeout) {
#ifndef ACCUM_WORKER_BINARY_DEFAULT
  GTEST_SKIP() << "the hung collective is a fault of the emulated NCCL (SIMT build only)";
#endif
  MpiJobDir job;
  const RunResult result = run_faulty_job(job, "hang", 3, "ACCUM_SIMT_NCCL_HANG_AFTER=6");
  EXPECT_EQ(result.exit_code, worker::kExitRuntimeFailure) << result.output;
  // The deadline is shared by the step's buckets: the time is 2000 ms or just under it.
  EXPECT_NE(result.output.find("aborting the job at optimizer step 2: gradient reduction "),
            std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find(": all_reduce timed out after "), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("another rank did not join it (dead, hung, or issuing collectives "
                               "in another order) (NCCL communicator aborted)"),
            std::string::npos)
      << result.output;
  EXPECT_EQ(read_metrics(job / "metrics.jsonl").size(), 1u) << "step 1 should have been taken";
  // The emulated ncclCommAbort ended the hung collective (as the real one ends its kernels).
  EXPECT_NE(result.output.find("hung stream(s) released"), std::string::npos) << result.output;
}

// Ranks that share one ACCUM_CUBLASLT_ALGOS file (the same path on every rank) keep one
// choice per GEMM shape: each appends under a lock, and a rank that timed a shape another
// rank kept meanwhile takes the kept choice, so both run the same algorithms.
TEST_F(GpuJobTest, RanksSharingACublasLtAlgorithmFileKeepOneChoicePerShape) {
  MpiJobDir job;
  const std::string algos = job / "algos.tsv";
  const std::string spec = job.write_spec(
      "shared", {{"device", "\"CUDA\""}, {"precision", "\"BF16\""}, {"max_steps", "2"}});
  std::vector<std::string> args = mpirun_args_;
  args.insert(args.end(), {"-x", "ACCUM_CUBLASLT_ALGOS=" + algos});
  const RunResult result = run(mpirun_argv(kRanks, spec, args), 240);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  std::map<std::string, int> shapes;
  int machines = 0;
  std::istringstream lines(read_file(algos));
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    const std::string first_field = line.substr(0, line.find('\t'));
    if (first_field == "machine") {
      ++machines;
    } else {
      ++shapes[first_field];
    }
  }
  EXPECT_EQ(machines, 1) << read_file(algos);
  EXPECT_GE(shapes.size(), 3u) << read_file(algos);
  for (const auto& [shape, count] : shapes) EXPECT_EQ(count, 1) << shape;
}

}  // namespace
}  // namespace accum::testing
