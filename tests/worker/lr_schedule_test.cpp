// tests/worker/lr_schedule_test.cpp — the learning rate schedule against DESIGN.md's formula,
// written out here from the spec's numbers: linear warmup, cosine to min_lr over max_steps or
// over optimizer.decay_steps (then min_lr), and constant.
#include "daemon/worker/train/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>

namespace accum::train {
namespace {

accum::v1::OptimizerSpec cosine(double lr, double min_lr, int warmup, int decay_steps = 0) {
  accum::v1::OptimizerSpec opt;
  opt.set_lr(lr);
  opt.set_min_lr(min_lr);
  opt.set_warmup_steps(warmup);
  opt.set_schedule("cosine");
  opt.set_decay_steps(decay_steps);
  return opt;
}

TEST(LearningRate, WarmsUpLinearlyThenFollowsTheCosineToMinLr) {
  const auto opt = cosine(1e-3, 1e-4, 4);
  const int64_t max_steps = 14;
  for (int64_t s = 0; s < 4; ++s) {
    EXPECT_DOUBLE_EQ(learning_rate(opt, s, max_steps), 1e-3 * double(s + 1) / 4.0) << s;
  }
  EXPECT_DOUBLE_EQ(learning_rate(opt, 4, max_steps), 1e-3);                 // the cosine's top
  EXPECT_DOUBLE_EQ(learning_rate(opt, 9, max_steps), 0.5 * (1e-3 + 1e-4));  // its middle
  const double last = 1e-4 + 0.5 * (1 + std::cos(M_PI * 9.0 / 10.0)) * (1e-3 - 1e-4);
  EXPECT_DOUBLE_EQ(learning_rate(opt, 13, max_steps), last);
}

TEST(LearningRate, ConstantStaysAtLrAfterWarmup) {
  auto opt = cosine(2e-3, 0, 2);
  opt.set_schedule("constant");
  EXPECT_DOUBLE_EQ(learning_rate(opt, 0, 100), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(opt, 2, 100), 2e-3);
  EXPECT_DOUBLE_EQ(learning_rate(opt, 99, 100), 2e-3);
}

TEST(LearningRate, DecayStepsEndsTheCosineThereAndHoldsMinLrAfter) {
  const auto opt = cosine(1e-3, 1e-4, 2, 12);
  for (int64_t s = 2; s < 12; ++s) {
    const double expected =
        1e-4 + 0.5 * (1 + std::cos(M_PI * double(s - 2) / 10.0)) * (1e-3 - 1e-4);
    EXPECT_DOUBLE_EQ(learning_rate(opt, s, 30), expected) << s;
  }
  for (int64_t s = 12; s < 30; ++s) EXPECT_DOUBLE_EQ(learning_rate(opt, s, 30), 1e-4) << s;
}

// What `accumctl continue --max-steps` relies on: with decay_steps set, the rate at a step
// does not depend on max_steps, so a run cut short and continued follows the same curve.
TEST(LearningRate, DecayStepsMakesTheCurveIndependentOfMaxSteps) {
  const auto planned = cosine(1e-3, 0, 3, 40);
  for (int64_t s = 0; s < 20; ++s) {
    EXPECT_EQ(learning_rate(planned, s, 20), learning_rate(planned, s, 40)) << s;
    EXPECT_EQ(learning_rate(planned, s, 40), learning_rate(cosine(1e-3, 0, 3), s, 40)) << s;
  }
  // Without it the curve is over max_steps, and a longer run's differs.
  EXPECT_NE(learning_rate(cosine(1e-3, 0, 3), 10, 20), learning_rate(cosine(1e-3, 0, 3), 10, 40));
}

}  // namespace
}  // namespace accum::train
