// The accumulation contract read from the metrics counters of a 4-rank job: micro-steps
// 0..K-2 issue no collective at all (summed over every rank), the first gradient
// collective is issued during micro-step K-1's backward, and the gradient buffer is
// reduced exactly once per optimizer step — each bucket once (all-reduce; ZeRO-1:
// reduce-scatter, plus one all-gather of the parameters), bytes_reduced equal to the
// fp32 gradient size whatever K is — next to one scalar exchange per window (and, under
// ZeRO-1, one all-reduce of the squared-norm partial sums).
#include <gtest/gtest.h>

#include <cmath>

#include "tests/distributed/mpi_job.h"

namespace accum::testing {
namespace {

constexpr int kRanks = 4;
constexpr int kLayers = 3, kWidth = 26, kVocab = 256, kContext = 16;
constexpr double kBucketMb = 0.03;  // 7864 fp32 per bucket: several buckets per step

class OneReductionPerStepTest : public ::testing::TestWithParam<int> {};

TEST_P(OneReductionPerStepTest, NoCommunicationBeforeTheLastMicroStepAndEachBucketOnce) {
  const int zero_stage = GetParam();
  const int64_t num_params = gpt2_parameter_count(kLayers, kWidth, kVocab, kContext);
  const int64_t buckets = expected_bucket_count(num_params, kBucketMb, kRanks, zero_stage);
  ASSERT_GE(buckets, 3) << "the model should span several buckets";
  MpiJobDir job;
  for (const int K : {1, 4, 8}) {
    SCOPED_TRACE("K=" + std::to_string(K));
    const std::string tag = "k" + std::to_string(K);
    const Overrides spec =
        outputs_for(tag, {{"model.n_layer", std::to_string(kLayers)},
                          {"model.d_model", std::to_string(kWidth)},
                          {"batch.tokens_per_update", std::to_string(kRanks * K * 2 * 16)},
                          {"distributed.zero_stage", std::to_string(zero_stage)},
                          {"distributed.bucket_mb", std::to_string(kBucketMb)},
                          {"max_steps", "4"}});
    auto result = job.run_job(tag, kRanks, spec);
    ASSERT_EQ(result.exit_code, 0) << result.output;
    const auto metrics = read_metrics(job / (tag + ".jsonl"));
    ASSERT_EQ(metrics.size(), 4u);
    for (const auto& line : metrics) {
      SCOPED_TRACE(line.raw);
      ASSERT_EQ(metric_value(line, "grad_accum_steps"), K);
      ASSERT_EQ(metric_value(line, "world_size"), kRanks);
      // Nothing, on any rank, before the last micro-step.
      EXPECT_EQ(metric_value(line, "collectives_before_last_micro_step"), 0);
      EXPECT_EQ(metric_value(line, "first_gradient_collective_micro_step"), K - 1);
      // The gradient buffer reduced once: every bucket once, the gradient size in bytes.
      EXPECT_EQ(line.collectives, buckets);
      EXPECT_EQ(line.bytes_reduced, 4 * num_params);
      if (zero_stage == 0) {
        EXPECT_EQ(metric_value(line, "param_collectives"), 0);
        EXPECT_EQ(metric_value(line, "bytes_gathered"), 0);
        // buckets + the one scalar exchange (loss, counted targets, commands).
        EXPECT_EQ(metric_value(line, "step_collectives"), buckets + 1);
      } else {
        EXPECT_EQ(metric_value(line, "param_collectives"), buckets);
        EXPECT_EQ(metric_value(line, "bytes_gathered"), 4 * num_params);
        // reduce-scatters + scalar exchange + norm partial sums + all-gathers.
        EXPECT_EQ(metric_value(line, "step_collectives"), 2 * buckets + 2);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(ZeroStage, OneReductionPerStepTest, ::testing::Values(0, 1),
                         [](const auto& info) { return "stage" + std::to_string(info.param); });

}  // namespace
}  // namespace accum::testing
