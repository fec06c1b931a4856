// ZeRO-1 (distributed.zero_stage 1) end to end on 4 ranks: it trains like stage 0 (fp32
// tolerance: only the summation order of the norm differs), each rank checkpoints its
// own 1/N of the Adam moments, and a ZeRO-1 run resumed on the same N is bit-identical
// to an uninterrupted one. The model's parameter count is deliberately not a multiple
// of N, so the padded last bucket is exercised.
#include <gtest/gtest.h>

#include <filesystem>

#include "absl/strings/str_format.h"
#include "daemon/worker/io/safetensors.h"
#include "tests/common/same_bytes.h"
#include "tests/distributed/mpi_job.h"

namespace accum::testing {
namespace {

namespace fs = std::filesystem;

constexpr int kRanks = 4;
constexpr int kLayers = 3, kWidth = 26;

Overrides padded_model(Overrides more) {
  more["model.n_layer"] = std::to_string(kLayers);
  more["model.d_model"] = std::to_string(kWidth);
  more["distributed.bucket_mb"] = "0.03";
  more["batch.tokens_per_update"] = "256";  // K = 2 on 4 ranks
  return more;
}

int64_t tensor_elements(const std::string& path, const std::string& tensor) {
  auto file = io::read_safetensors(path);
  if (!file.ok()) ADD_FAILURE() << file.status().message();
  return file.ok() ? static_cast<int64_t>(file->tensors[tensor].data.size()) : -1;
}

TEST(ZeroOneTest, TrainsLikeStageZeroAndShardsTheOptimizerState) {
  const int64_t num_params = gpt2_parameter_count(kLayers, kWidth, 256, 16);
  ASSERT_NE(num_params % kRanks, 0) << "pick a model whose size needs padding";
  MpiJobDir job;
  auto stage0 =
      job.run_job("stage0", kRanks, outputs_for("s0", padded_model({{"max_steps", "5"}})));
  ASSERT_EQ(stage0.exit_code, 0) << stage0.output;
  auto stage1 = job.run_job(
      "stage1", kRanks,
      outputs_for("s1", padded_model({{"max_steps", "5"}, {"distributed.zero_stage", "1"}})));
  ASSERT_EQ(stage1.exit_code, 0) << stage1.output;

  const auto m0 = read_metrics(job / "s0.jsonl"), m1 = read_metrics(job / "s1.jsonl");
  ASSERT_EQ(m0.size(), 5u);
  ASSERT_EQ(m1.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    SCOPED_TRACE("step " + std::to_string(i + 1));
    EXPECT_NEAR(m1[i].loss, m0[i].loss, 1e-5 * m0[i].loss);
    EXPECT_NEAR(m1[i].grad_norm, m0[i].grad_norm, 1e-5 * m0[i].grad_norm);
  }
  const auto w0 = read_weights(job / "ckpt_s0/step_00000005/model.safetensors");
  const auto w1 = read_weights(job / "ckpt_s1/step_00000005/model.safetensors");
  EXPECT_LE(relative_l2(w1, w0), 1e-5);

  // Stage 0: one optimizer file with every moment. ZeRO-1: one file per rank, each
  // holding about 1/N of them, together exactly all of them.
  EXPECT_EQ(tensor_elements(job / "ckpt_s0/step_00000005/optimizer.safetensors", "exp_avg"),
            num_params);
  const std::string step_dir = job / "ckpt_s1/step_00000005";
  EXPECT_FALSE(fs::exists(step_dir + "/optimizer.safetensors"));
  int64_t total = 0;
  for (int rank = 0; rank < kRanks; ++rank) {
    const std::string shard =
        step_dir + absl::StrFormat("/optimizer-rank%05d-of-%05d.safetensors", rank, kRanks);
    ASSERT_TRUE(fs::exists(shard)) << shard;
    const int64_t owned = tensor_elements(shard, "exp_avg");
    EXPECT_EQ(tensor_elements(shard, "exp_avg_sq"), owned);
    EXPECT_GT(owned, 0);
    EXPECT_LE(owned, num_params / kRanks + 8) << shard;  // 1/N, plus padding slack per bucket
    total += owned;
  }
  EXPECT_EQ(total, num_params);
}

TEST(ZeroOneTest, ResumeOnTheSameRankCountIsBitIdentical) {
  MpiJobDir job;
  const Overrides common = {{"distributed.zero_stage", "1"}, {"data.shuffle", "true"}};
  const auto spec = [&](const Overrides& more) { return padded_model(merged(common, more)); };
  auto straight =
      job.run_job("straight", kRanks, outputs_for("straight", spec({{"max_steps", "6"}})));
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  auto first = job.run_job("first", kRanks, outputs_for("resumed", spec({{"max_steps", "3"}})));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  // The same max_steps as the straight run, so the cosine schedule is the same one.
  auto second = job.run_job(
      "second", kRanks,
      outputs_for("resumed", spec({{"max_steps", "6"}, {"checkpoint.resume_from", "\"latest\""}})));
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("resumed from"), std::string::npos) << second.output;

  const auto s = read_metrics(job / "straight.jsonl"), r = read_metrics(job / "resumed.jsonl");
  ASSERT_EQ(s.size(), 6u);
  ASSERT_EQ(r.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    SCOPED_TRACE("step " + std::to_string(i + 1));
    EXPECT_EQ(r[i].step, s[i].step);
    EXPECT_EQ(r[i].loss, s[i].loss);
    EXPECT_EQ(r[i].grad_norm, s[i].grad_norm);
    EXPECT_EQ(r[i].lr, s[i].lr);
  }
  const std::string a = job / "ckpt_straight/step_00000006", b = job / "ckpt_resumed/step_00000006";
  EXPECT_TRUE(same_bytes(a + "/model.safetensors", b + "/model.safetensors"));
  for (int rank = 0; rank < kRanks; ++rank) {
    const std::string shard =
        absl::StrFormat("/optimizer-rank%05d-of-%05d.safetensors", rank, kRanks);
    EXPECT_TRUE(same_bytes(a + shard, b + shard)) << shard;
  }
}

}  // namespace
}  // namespace accum::testing
