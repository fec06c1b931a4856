// N ranks x K micro-batches train exactly like 1 rank x N*K micro-batches: the same
// loss lines and the same final weights (fp32 tolerance) with tokens_per_update fixed,
// because rank r reads micro-batch i of step s at chunk (s*K + i)*N + r (DESIGN.md) and
// the loss is normalized over the whole global batch.
#include <gtest/gtest.h>

#include "tests/distributed/mpi_job.h"

namespace accum::testing {
namespace {

// B=2, T=16: 32 tokens per micro-batch; 512 per update -> K = 16 / 8 / 4 on 1 / 2 / 4 ranks.
const Overrides kBatch = {{"batch.tokens_per_update", "512"}, {"max_steps", "5"}};

class RankEquivalenceTest : public ::testing::TestWithParam<int> {};

TEST_P(RankEquivalenceTest, SameLossLinesAndWeightsAsOneRankWithNTimesKMicroBatches) {
  const int ranks = GetParam();
  MpiJobDir job;
  auto one = job.run_job("one", 1, outputs_for("one", kBatch));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto many = job.run_job("many", ranks, outputs_for("many", kBatch));
  ASSERT_EQ(many.exit_code, 0) << many.output;

  const auto reference = read_metrics(job / "one.jsonl");
  const auto distributed = read_metrics(job / "many.jsonl");
  ASSERT_EQ(reference.size(), 5u);
  ASSERT_EQ(distributed.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    SCOPED_TRACE("step " + std::to_string(i + 1));
    // The runs really differ in shape: K and N are what the metrics say.
    EXPECT_EQ(metric_value(reference[i], "world_size"), 1);
    EXPECT_EQ(metric_value(reference[i], "grad_accum_steps"), 16);
    EXPECT_EQ(metric_value(distributed[i], "world_size"), ranks);
    EXPECT_EQ(metric_value(distributed[i], "grad_accum_steps"), 16 / ranks);
    EXPECT_EQ(distributed[i].tokens, 512);  // the global batch, not rank 0's share
    EXPECT_EQ(reference[i].step, distributed[i].step);
    EXPECT_NEAR(distributed[i].loss, reference[i].loss, 1e-5 * reference[i].loss);
    EXPECT_NEAR(distributed[i].grad_norm, reference[i].grad_norm, 1e-5 * reference[i].grad_norm);
    EXPECT_EQ(distributed[i].lr, reference[i].lr);
  }
  const auto w_one = read_weights(job / "ckpt_one/step_00000005/model.safetensors");
  const auto w_many = read_weights(job / "ckpt_many/step_00000005/model.safetensors");
  ASSERT_FALSE(w_one.empty());
  EXPECT_LE(relative_l2(w_many, w_one), 1e-5);
  // ... and the weights did move: the comparison is not between two initializations.
  const auto first = job.run_job("init", 1,
                                 outputs_for("init", {{"max_steps", "1"},
                                                      {"optimizer.lr", "1e-12"},
                                                      {"optimizer.min_lr", "0"},
                                                      {"optimizer.warmup_steps", "0"}}));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const auto w_init = read_weights(job / "ckpt_init/step_00000001/model.safetensors");
  EXPECT_GT(relative_l2(w_one, w_init), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Ranks, RankEquivalenceTest, ::testing::Values(2, 4),
                         [](const auto& info) { return std::to_string(info.param) + "ranks"; });

}  // namespace
}  // namespace accum::testing
