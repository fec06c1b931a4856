// accumctl's progress line (client/progress_bar.h): what `accumctl watch` prints per step.
#include "client/progress_bar.h"

#include <gtest/gtest.h>

namespace accum::testing {
namespace {

accum::v1::StepMetrics step(int64_t n) {
  accum::v1::StepMetrics m;
  m.set_step(n);
  m.set_lr(3e-4);
  m.set_grad_norm(0.5);
  m.set_tokens_per_s(12345);
  m.set_step_ms(100);
  return m;
}

TEST(ProgressBar, ShowsTheLossAndTheTimeLeft) {
  accum::v1::StepMetrics m = step(50);
  m.set_loss(2.4312);
  EXPECT_EQ(ctl::format_progress_bar(m, 100, "RUNNING", 10),
            "[#####.....]  50/100 steps  loss 2.4312  12.3k tok/s  ETA 0:05  RUNNING");
  EXPECT_EQ(ctl::format_step_line(m, 100),
            "step 50/100 loss 2.431200 lr 0.0003 grad_norm 0.5000 tokens/s 12345 step_ms 100.0");
}

// A step whose every target was masked reports no loss; a 0 would read as a perfect model.
TEST(ProgressBar, AStepWithNoCountedTargetShowsNoLoss) {
  const accum::v1::StepMetrics m = step(3);
  EXPECT_EQ(ctl::format_loss(m), "-");
  EXPECT_EQ(ctl::format_progress_bar(m, 10, "RUNNING", 10),
            "[###.......]  3/10 steps  loss -  12.3k tok/s  ETA 0:01  RUNNING");
  EXPECT_EQ(ctl::format_step_line(m, 10),
            "step 3/10 loss - lr 0.0003 grad_norm 0.5000 tokens/s 12345 step_ms 100.0");
  accum::v1::StepMetrics zero = step(3);
  zero.set_loss(0.0);  // a real loss of 0 is still a loss
  EXPECT_EQ(ctl::format_loss(zero), "0.0000");
}

}  // namespace
}  // namespace accum::testing
