#include "daemon/worker/train/lr_schedule.h"

#include <cmath>

namespace accum::train {

double learning_rate(const accum::v1::OptimizerSpec& opt, int64_t step, int64_t max_steps) {
  const int64_t warmup = opt.warmup_steps();
  if (step < warmup) return opt.lr() * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (opt.schedule() == "constant" || max_steps <= warmup) return opt.lr();
  const double progress =
      static_cast<double>(step - warmup) / static_cast<double>(max_steps - warmup);
  return opt.min_lr() + 0.5 * (1.0 + std::cos(M_PI * progress)) * (opt.lr() - opt.min_lr());
}

}  // namespace accum::train
