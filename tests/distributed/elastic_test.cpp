// Elastic resume: a checkpoint written by 4 ranks continues on 2 ranks with K doubled,
// so the effective batch (tokens_per_update) and the token stream position stay the
// same and the loss curve is the uninterrupted 4-rank one (fp32 tolerance: only the
// order of the cross-rank sums changes). Under ZeRO-1 the 4 optimizer shards are
// re-sharded into 2. A rank count that cannot keep tokens_per_update is refused with
// the list of rank counts that can.
#include <gtest/gtest.h>

#include <filesystem>

#include "absl/strings/str_format.h"
#include "daemon/worker/io/checkpoint_dir.h"
#include "tests/distributed/mpi_job.h"

namespace accum::testing {
namespace {

namespace fs = std::filesystem;

class ElasticResumeTest : public ::testing::TestWithParam<int> {};

TEST_P(ElasticResumeTest, FourRanksCheckpointContinuesOnTwoRanksOnTheSameCurve) {
  const int zero_stage = GetParam();
  MpiJobDir job;
  // B=2, T=16: 256 tokens per update = 4 ranks x K=2 = 2 ranks x K=4.
  const Overrides common = {{"batch.tokens_per_update", "256"},
                            {"distributed.zero_stage", std::to_string(zero_stage)},
                            {"distributed.bucket_mb", "0.05"},
                            {"data.shuffle", "true"}};
  auto straight =
      job.run_job("straight", 4, outputs_for("straight", merged(common, {{"max_steps", "6"}})));
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  auto first =
      job.run_job("first", 4, outputs_for("elastic", merged(common, {{"max_steps", "3"}})));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  auto second = job.run_job(
      "second", 2,
      outputs_for("elastic",
                  merged(common, {{"max_steps", "6"}, {"checkpoint.resume_from", "\"latest\""}})));
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("written by 4 ranks x K=2; now 2 ranks x K=4"), std::string::npos)
      << second.output;

  const auto s = read_metrics(job / "straight.jsonl"), e = read_metrics(job / "elastic.jsonl");
  ASSERT_EQ(s.size(), 6u);
  ASSERT_EQ(e.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    SCOPED_TRACE("step " + std::to_string(i + 1));
    const bool after_resume = i >= 3;
    EXPECT_EQ(metric_value(e[i], "world_size"), after_resume ? 2 : 4);
    EXPECT_EQ(metric_value(e[i], "grad_accum_steps"), after_resume ? 4 : 2);
    EXPECT_EQ(e[i].tokens, 256);
    EXPECT_EQ(e[i].lr, s[i].lr);
    EXPECT_NEAR(e[i].loss, s[i].loss, 1e-5 * s[i].loss);
    EXPECT_NEAR(e[i].grad_norm, s[i].grad_norm, 1e-5 * s[i].grad_norm);
  }
  const auto ws = read_weights(job / "ckpt_straight/step_00000006/model.safetensors");
  const auto we = read_weights(job / "ckpt_elastic/step_00000006/model.safetensors");
  EXPECT_LE(relative_l2(we, ws), 1e-5);
  if (zero_stage == 1) {
    // The step-3 checkpoint had 4 shards; the 2-rank run re-sharded into 2.
    for (int rank = 0; rank < 4; ++rank) {
      EXPECT_TRUE(fs::exists(
          job / absl::StrFormat(
                    "ckpt_elastic/step_00000003/optimizer-rank%05d-of-00004.safetensors", rank)));
    }
    for (int rank = 0; rank < 2; ++rank) {
      EXPECT_TRUE(fs::exists(
          job / absl::StrFormat(
                    "ckpt_elastic/step_00000006/optimizer-rank%05d-of-00002.safetensors", rank)));
    }
    EXPECT_FALSE(
        fs::exists(job / "ckpt_elastic/step_00000006/optimizer-rank00002-of-00004.safetensors"));
  }
}

INSTANTIATE_TEST_SUITE_P(ZeroStage, ElasticResumeTest, ::testing::Values(0, 1),
                         [](const auto& info) { return "stage" + std::to_string(info.param); });

TEST(ElasticResumeRefusalTest, ImpossibleRankCountIsRefusedWithTheValidOnes) {
  MpiJobDir job;
  // 128 tokens per update with B*T = 32: 1, 2 or 4 ranks can keep it; 3 cannot.
  const Overrides common = outputs_for("job", {{"batch.tokens_per_update", "128"}});
  auto first = job.run_job("first", 4, merged(common, {{"max_steps", "2"}}));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  auto refused = job.run_job(
      "refused", 3, merged(common, {{"max_steps", "4"}, {"checkpoint.resume_from", "\"latest\""}}));
  EXPECT_NE(refused.exit_code, 0) << refused.output;
  EXPECT_NE(refused.output.find("on 3 ranks"), std::string::npos) << refused.output;
  EXPECT_NE(refused.output.find("tokens_per_update 128"), std::string::npos) << refused.output;
  EXPECT_NE(refused.output.find("rank counts that work: 1, 2, 4"), std::string::npos)
      << refused.output;
  // Nothing was trained or overwritten: the metrics stop at step 2, the checkpoint is intact.
  EXPECT_EQ(read_metrics(job / "job.jsonl").size(), 2u);
  EXPECT_TRUE(io::verify_checkpoint(job / "ckpt_job/step_00000002").ok());
  // The same checkpoint resumes on 2 ranks, one of the listed counts.
  auto accepted =
      job.run_job("accepted", 2,
                  merged(common, {{"max_steps", "4"}, {"checkpoint.resume_from", "\"latest\""}}));
  EXPECT_EQ(accepted.exit_code, 0) << accepted.output;
  EXPECT_EQ(read_metrics(job / "job.jsonl").size(), 4u);
}

}  // namespace
}  // namespace accum::testing
