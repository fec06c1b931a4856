#include "daemon/worker/train/lr_schedule.h"

#include <cmath>

namespace accum::train {

double learning_rate(const accum::v1::OptimizerSpec& opt, int64_t step, int64_t max_steps) {
  const int64_t warmup = opt.warmup_steps();
  if (step < warmup) return opt.lr() * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const int64_t decay_end = opt.decay_steps() > 0 ? opt.decay_steps() : max_steps;
  if (opt.schedule() == "constant" || decay_end <= warmup) return opt.lr();
  if (step >= decay_end) return opt.min_lr();
  const double progress =
      static_cast<double>(step - warmup) / static_cast<double>(decay_end - warmup);
  return opt.min_lr() + 0.5 * (1.0 + std::cos(M_PI * progress)) * (opt.lr() - opt.min_lr());
}

}  // namespace accum::train
