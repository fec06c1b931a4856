// spec/lr_schedule.h — learning rate at optimizer step s (0-based), DESIGN.md "Optimizer":
//   s < warmup:                 lr * (s+1) / warmup
//   cosine, warmup <= s < D:    min_lr + 0.5 * (1 + cos(pi * (s-warmup) / (D-warmup))) *
//                               (lr - min_lr)
//   cosine, s >= D:             min_lr
//   constant afterwards:        lr
// where D is optimizer.decay_steps, or max_steps when that is 0 (DESIGN.md's formula).
// The schedule is the spec's: the worker trains by it, and accumd tells what a new
// max_steps does to it when a job is continued.
#pragma once

#include <cstdint>
#include <string>

#include "proto/accum.pb.h"

namespace accum::spec {

double learning_rate(const accum::v1::OptimizerSpec& opt, int64_t step, int64_t max_steps);

// What continuing a run with `new_max_steps` instead of `old_max_steps` does to its learning
// rate, once it has taken `done_steps` optimizer steps: "" when the rates from there on are
// the old curve's (a constant schedule, or a cosine over optimizer.decay_steps). Otherwise
// e.g. "its cosine learning rate now decays to step 8 instead of 4: step 5 trains at
// 8.536e-04, higher than the old curve's 3.000e-04", naming the first step (1-based, as
// progress is shown) whose rate changes.
std::string schedule_change_note(const accum::v1::OptimizerSpec& opt, int64_t done_steps,
                                 int64_t old_max_steps, int64_t new_max_steps);

}  // namespace accum::spec
