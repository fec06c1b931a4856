// Masked targets spread unevenly over ranks train exactly like one rank: the loss is the
// token-weighted mean over the whole global batch (DESIGN.md), so a rank whose
// micro-batches count no target at all, or three, adds its share and nothing else; the
// gradient norm behind clipping is the global one, and a global batch with no counted
// target skips the update on every rank alike. Stage 0 and ZeRO-1 alike; the validation
// loss is token-weighted over ranks too. tests/reference checks the one-rank run against
// PyTorch with such masks; this closes the loop for N ranks.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>

#include "tests/distributed/mpi_job.h"

namespace accum::testing {
namespace {

constexpr int kChunk = 2 * 16;     // tiny_spec_json's B x T
constexpr int kChunksPerStep = 8;  // tokens_per_update 256: K = 8 / 4 / 2 on 1 / 2 / 4 ranks
constexpr int kSteps = 6;
constexpr int kFullyMaskedStep = 3;  // 1-based
constexpr double kGradClip = 2.0;    // between the unclipped and the clipped norms here

// Counted targets of global chunk c (its targets are bytes c*32+1 .. c*32+32): on 4 ranks
// rank 1 (c % 4 == 1) never counts one and rank 2 counts 3 per micro-batch; on 2 ranks
// rank 1 alternates between none and all. The step kFullyMaskedStep counts none at all.
std::string chunk_mask(int chunk) {
  const int step = chunk / kChunksPerStep + 1;
  if (step == kFullyMaskedStep || chunk % 4 == 1) return std::string(kChunk, '\0');
  if (chunk % 4 == 2) return std::string(3, '\x7f') + std::string(kChunk - 3, '\0');
  return std::string(kChunk, '\1');
}

// The sidecar of a stream of `bytes` bytes: byte 0 is no chunk's target.
std::string stream_mask(size_t bytes) {
  std::string mask = "\1";
  for (int chunk = 0; mask.size() < bytes; ++chunk) mask += chunk_mask(chunk);
  mask.resize(bytes);
  return mask;
}

int64_t counted_in_step(int step) {
  int64_t counted = 0;
  for (int c = (step - 1) * kChunksPerStep; c < step * kChunksPerStep; ++c) {
    for (char byte : chunk_mask(c)) counted += byte != 0;
  }
  return counted;
}

Overrides masked_job(Overrides more) {
  more["data.use_mask"] = "true";
  more["data.val"] = "\"val.txt\"";
  more["batch.tokens_per_update"] = std::to_string(kChunk * kChunksPerStep);
  more["max_steps"] = std::to_string(kSteps);
  more["optimizer.grad_clip"] = std::to_string(kGradClip);
  more["eval.every_steps"] = std::to_string(kSteps);
  return more;
}

// (ranks, distributed.zero_stage)
class MaskedRankEquivalenceTest : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(MaskedRankEquivalenceTest, UnevenlyMaskedRanksTrainLikeOneRank) {
  const auto [ranks, zero_stage] = GetParam();
  MpiJobDir job;
  write_file(job / "corpus.txt.mask", stream_mask(read_file(job / "corpus.txt").size()));
  // Eight validation chunks: eval.batches per rank x ranks reads chunks 0..7 on any N.
  const size_t val_bytes = kChunksPerStep * kChunk + 1;
  write_file(job / "val.txt", make_corpus(val_bytes, 11));
  write_file(job / "val.txt.mask", stream_mask(val_bytes));

  auto one = job.run_job("one", 1, outputs_for("one", masked_job({{"eval.batches", "8"}})));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto many = job.run_job(
      "many", ranks,
      outputs_for("many", masked_job({{"eval.batches", std::to_string(kChunksPerStep / ranks)},
                                      {"distributed.zero_stage", std::to_string(zero_stage)}})));
  ASSERT_EQ(many.exit_code, 0) << many.output;

  const auto reference = read_metrics(job / "one.jsonl");
  const auto distributed = read_metrics(job / "many.jsonl");
  ASSERT_EQ(reference.size(), static_cast<size_t>(kSteps));
  ASSERT_EQ(distributed.size(), static_cast<size_t>(kSteps));
  int clipped = 0, unclipped = 0;
  for (int i = 0; i < kSteps; ++i) {
    const int step = i + 1;
    SCOPED_TRACE("step " + std::to_string(step));
    const auto& r = reference[i];
    const auto& d = distributed[i];
    EXPECT_EQ(metric_value(d, "world_size"), ranks);
    EXPECT_EQ(r.tokens, counted_in_step(step));  // the global count, not rank 0's
    EXPECT_EQ(d.tokens, counted_in_step(step));
    EXPECT_EQ(d.lr, r.lr);
    if (step == kFullyMaskedStep) {
      EXPECT_EQ(d.tokens, 0);
      EXPECT_EQ(d.grad_norm, 0.0);
      const std::string words = "step " + std::to_string(step) +
                                ": every target of the global batch is masked (0 counted "
                                "tokens); the optimizer update was skipped";
      EXPECT_NE(many.output.find(words), std::string::npos) << many.output;
      continue;
    }
    EXPECT_NEAR(d.loss, r.loss, 1e-5 * r.loss);
    EXPECT_NEAR(d.grad_norm, r.grad_norm, 1e-5 * r.grad_norm);
    (r.grad_norm > kGradClip ? clipped : unclipped) += 1;
  }
  // Both sides of the clipping threshold were exercised.
  EXPECT_GT(clipped, 0);
  EXPECT_GT(unclipped, 0);
  const double val_one = metric_value(reference.back(), "val_loss");
  const double val_many = metric_value(distributed.back(), "val_loss");
  ASSERT_FALSE(std::isnan(val_one)) << reference.back().raw;
  EXPECT_NEAR(val_many, val_one, 1e-6 * val_one);

  const std::string final_weights = "/step_0000000" + std::to_string(kSteps) + "/model.safetensors";
  const auto w_one = read_weights(job / ("ckpt_one" + final_weights));
  const auto w_many = read_weights(job / ("ckpt_many" + final_weights));
  ASSERT_FALSE(w_one.empty());
  EXPECT_LE(relative_l2(w_many, w_one), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Ranks, MaskedRankEquivalenceTest,
                         ::testing::Values(std::make_tuple(2, 0), std::make_tuple(4, 0),
                                           std::make_tuple(4, 1)),
                         [](const auto& info) {
                           return std::to_string(std::get<0>(info.param)) + "ranks_zero" +
                                  std::to_string(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace accum::testing
