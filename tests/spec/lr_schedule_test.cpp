// tests/spec/lr_schedule_test.cpp — the learning rate schedule against DESIGN.md's formula,
// written out here from the spec's numbers: linear warmup, cosine to min_lr over max_steps or
// over optimizer.decay_steps (then min_lr), and constant; and the note accumd gives when a
// continued job's new max_steps changes the curve.
#include "daemon/spec/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>

#include "absl/strings/str_format.h"

namespace accum::spec {
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

// The cosine of DESIGN.md at 0-based step s past the warmup, over `decay_end` steps.
double cosine_at(double lr, double min_lr, int64_t warmup, int64_t decay_end, int64_t s) {
  return min_lr + 0.5 * (1 + std::cos(M_PI * double(s - warmup) / double(decay_end - warmup))) *
                      (lr - min_lr);
}

std::string rate(double value) { return absl::StrFormat("%.3e", value); }

// A run that ended at its max_steps (on min_lr) and goes on to twice as many: its next step
// trains at the new, longer curve's rate, higher than the old curve's min_lr.
TEST(ScheduleChangeNote, ALongerCosineNamesTheNextStepsHigherRate) {
  const auto opt = cosine(1e-3, 1e-4, 2);
  EXPECT_EQ(schedule_change_note(opt, 4, 4, 8),
            "its cosine learning rate now decays to step 8 instead of 4: step 5 trains at " +
                rate(cosine_at(1e-3, 1e-4, 2, 8, 4)) + ", higher than the old curve's " +
                rate(1e-4));
}

// A run cut short (20 -> 10 steps) after 6: the new curve falls faster, so step 7's rate is
// lower than the old curve's.
TEST(ScheduleChangeNote, AShorterCosineNamesTheNextStepsLowerRate) {
  const auto opt = cosine(1e-3, 1e-4, 2);
  EXPECT_EQ(schedule_change_note(opt, 6, 20, 10),
            "its cosine learning rate now decays to step 10 instead of 20: step 7 trains at " +
                rate(cosine_at(1e-3, 1e-4, 2, 10, 6)) + ", lower than the old curve's " +
                rate(cosine_at(1e-3, 1e-4, 2, 20, 6)));
}

// Stopped within the warmup (5 steps): the warmup and the cosine's top (step 6) are the same
// on both curves, so the first rate that changes is step 7's.
TEST(ScheduleChangeNote, WithinTheWarmupItNamesTheFirstStepAfterTheTop) {
  const auto opt = cosine(1e-3, 1e-4, 5);
  EXPECT_EQ(learning_rate(opt, 5, 10), learning_rate(opt, 5, 20));
  EXPECT_EQ(schedule_change_note(opt, 2, 10, 20),
            "its cosine learning rate now decays to step 20 instead of 10: after the warmup, "
            "step 7 trains at " +
                rate(cosine_at(1e-3, 1e-4, 5, 20, 6)) + ", higher than the old curve's " +
                rate(cosine_at(1e-3, 1e-4, 5, 10, 6)));
}

// No note where the rates go on as before: a cosine over decay_steps, a constant schedule,
// the same max_steps, two curves that both end within the warmup (a constant lr after it),
// or a run that ends within its warmup, where both curves are the same.
TEST(ScheduleChangeNote, NoNoteWhereTheRatesDoNotChange) {
  EXPECT_EQ(schedule_change_note(cosine(1e-3, 1e-4, 2, 12), 4, 4, 8), "");
  auto constant = cosine(1e-3, 1e-4, 2);
  constant.set_schedule("constant");
  EXPECT_EQ(schedule_change_note(constant, 4, 4, 8), "");
  EXPECT_EQ(schedule_change_note(cosine(1e-3, 1e-4, 2), 4, 8, 8), "");
  EXPECT_EQ(schedule_change_note(cosine(1e-3, 1e-4, 10), 3, 5, 8), "");
  EXPECT_EQ(schedule_change_note(cosine(1e-3, 1e-4, 30), 8, 150, 10), "");
}

}  // namespace
}  // namespace accum::spec
