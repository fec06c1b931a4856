// The real accum-worker on 2 GPUs under mpirun (device CUDA: the NCCL back end): 2 ranks
// x K micro-batches train like 1 GPU x 2K micro-batches, with ZeRO-1 or without, and the
// optimizer state of ZeRO-1 is sharded. Label gpu: SKIPPED with the reason unless this
// node has a GPU per rank. Built for the SIMT emulator (tests/simt) it runs in every CI
// run: two emulated GPUs per node, the emulated NCCL's collectives going over MPI.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

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

class GpuRanksTest : public ::testing::TestWithParam<int> {
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
  std::vector<std::string> mpirun_args_;
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

}  // namespace
}  // namespace accum::testing
