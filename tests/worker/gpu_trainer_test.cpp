// The trainer on the CUDA back end (ctest label `gpu`): accumulation equivalence,
// bit-identical resume, the memory report and the out-of-memory advice, run through the
// real accum-worker. SKIPPED with the reason when no GPU is visible. tests/simt runs it
// again on the SIMT emulator (simt.GpuTrainerTest.*).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "kernels/backend.h"
#include "tests/worker/worker_test_util.h"

namespace accum::testing {
namespace {

class GpuTrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
#ifdef ACCUM_WORKER_BINARY_DEFAULT
    // Built for the SIMT emulator (tests/simt): run the worker built against it.
    setenv("ACCUM_WORKER_BINARY", ACCUM_WORKER_BINARY_DEFAULT, 0);
#endif
    std::string why;
    if (!kernels::backend_available(kernels::DeviceKind::kCuda, &why)) GTEST_SKIP() << why;
    write_file(dir_ / "corpus.txt", make_corpus(60000));
  }
  RunResult train(const std::string& name, std::map<std::string, std::string> overrides) {
    overrides["device"] = "\"CUDA\"";
    overrides["precision"] = "\"BF16\"";
    write_file(dir_ / (name + ".json"), tiny_spec_json(overrides));
    return run({worker_binary(), "--spec", dir_ / (name + ".json")});
  }
  TempDir dir_;
};

TEST_F(GpuTrainerTest, EightMicroBatchesOfOneTrainLikeOneBatchOfEight) {
  auto a = train("a", {{"batch.micro_batch_size", "1"},
                       {"batch.tokens_per_update", ""},
                       {"batch.grad_accum_steps", "8"},
                       {"max_steps", "5"},
                       {"checkpoint.dir", "\"ckpt_a\""},
                       {"metrics_path", "\"a.jsonl\""}});
  ASSERT_EQ(a.exit_code, 0) << a.output;
  auto b = train("b", {{"batch.micro_batch_size", "8"},
                       {"batch.tokens_per_update", ""},
                       {"batch.grad_accum_steps", "1"},
                       {"max_steps", "5"},
                       {"checkpoint.dir", "\"ckpt_b\""},
                       {"metrics_path", "\"b.jsonl\""}});
  ASSERT_EQ(b.exit_code, 0) << b.output;
  const auto ma = read_metrics(dir_ / "a.jsonl"), mb = read_metrics(dir_ / "b.jsonl");
  ASSERT_EQ(ma.size(), 5u);
  ASSERT_EQ(mb.size(), 5u);
  // bf16 activations, fp32 accumulation: the split only changes fp32 summation order.
  for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(ma[i].loss, mb[i].loss, 1e-3 * mb[i].loss);
  EXPECT_LE(relative_l2(read_weights(dir_ / "ckpt_a/step_00000005/model.safetensors"),
                        read_weights(dir_ / "ckpt_b/step_00000005/model.safetensors")),
            1e-3);
}

TEST_F(GpuTrainerTest, ResumeIsBitIdentical) {
  auto straight = train(
      "s", {{"max_steps", "6"}, {"checkpoint.dir", "\"ckpt_s\""}, {"metrics_path", "\"s.jsonl\""}});
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  auto first = train(
      "r1",
      {{"max_steps", "3"}, {"checkpoint.dir", "\"ckpt_r\""}, {"metrics_path", "\"r.jsonl\""}});
  ASSERT_EQ(first.exit_code, 0) << first.output;
  auto second = train("r2", {{"max_steps", "6"},
                             {"checkpoint.dir", "\"ckpt_r\""},
                             {"metrics_path", "\"r.jsonl\""},
                             {"checkpoint.resume_from", "\"latest\""}});
  ASSERT_EQ(second.exit_code, 0) << second.output;
  const auto s = read_metrics(dir_ / "s.jsonl"), r = read_metrics(dir_ / "r.jsonl");
  ASSERT_EQ(s.size(), 6u);
  ASSERT_EQ(r.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(s[i].loss, r[i].loss) << "step " << i + 1;
  EXPECT_EQ(read_file(dir_ / "ckpt_s/step_00000006/model.safetensors"),
            read_file(dir_ / "ckpt_r/step_00000006/model.safetensors"));
}

TEST_F(GpuTrainerTest, MemoryReportAndOutOfMemoryAdvice) {
  auto small = train(
      "small",
      {{"max_steps", "1"}, {"checkpoint.dir", "\"ckpt_m\""}, {"metrics_path", "\"m.jsonl\""}});
  ASSERT_EQ(small.exit_code, 0) << small.output;
  // The arithmetic of the gradient-accumulation note next to what the device says.
  EXPECT_NE(small.output.find("memory: params"), std::string::npos) << small.output;
  EXPECT_NE(small.output.find("| device reports"), std::string::npos) << small.output;
  // 4M-token micro-batches of a 50k vocabulary need 420 GB of logits, more than any one GPU
  // has; the memory arithmetic is checked before the data is read. (1M-token micro-batches,
  // 105 GB of logits, fit the arithmetic on an H200's 141 GB: the run then stopped at the
  // data instead, which holds 60000 tokens.)
  auto huge = train("huge", {{"model.vocab_size", "50000"},
                             {"model.max_seq_len", "1024"},
                             {"batch.seq_len", "1024"},
                             {"batch.micro_batch_size", "4096"},
                             {"batch.tokens_per_update", "8388608"},
                             {"checkpoint.dir", "\"ckpt_h\""},
                             {"metrics_path", "\"h.jsonl\""}});
  EXPECT_NE(huge.exit_code, 0);
  EXPECT_NE(huge.output.find("out of memory"), std::string::npos) << huge.output;
  EXPECT_NE(huge.output.find("largest micro_batch_size that fits is"), std::string::npos)
      << huge.output;
  EXPECT_NE(huge.output.find("keeps tokens_per_update 8388608"), std::string::npos) << huge.output;
}

}  // namespace
}  // namespace accum::testing
