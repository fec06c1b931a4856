#include "daemon/spec/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace accum::spec {

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

std::string schedule_change_note(const accum::v1::OptimizerSpec& opt, int64_t done_steps,
                                 int64_t old_max_steps, int64_t new_max_steps) {
  if (opt.schedule() != "cosine" || opt.decay_steps() > 0 || old_max_steps == new_max_steps) {
    return "";
  }
  // Both curves share the warmup and the cosine's top (step `warmup`, 0-based), so the
  // first rate that can differ is at the next step taken or just after the top.
  const int64_t first = std::max(done_steps, int64_t{opt.warmup_steps()} + 1);
  if (first >= new_max_steps) return "";  // the run ends before it: every rate it trains at is old
  const double now = learning_rate(opt, first, new_max_steps);
  const double before = learning_rate(opt, first, old_max_steps);
  if (now == before) return "";  // e.g. both curves end within the warmup: a constant lr
  return absl::StrCat(
      "its cosine learning rate now decays to step ", new_max_steps, " instead of ", old_max_steps,
      ": ", first == done_steps ? "step " : "after the warmup, step ", first + 1, " trains at ",
      absl::StrFormat("%.3e", now), now > before ? ", higher than" : ", lower than",
      " the old curve's ", absl::StrFormat("%.3e", before));
}

}  // namespace accum::spec
