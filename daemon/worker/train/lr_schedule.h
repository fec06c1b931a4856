// train/lr_schedule.h — learning rate at optimizer step s (0-based), DESIGN.md "Optimizer":
//   s < warmup:                 lr * (s+1) / warmup
//   cosine, warmup <= s < D:    min_lr + 0.5 * (1 + cos(pi * (s-warmup) / (D-warmup))) *
//                               (lr - min_lr)
//   cosine, s >= D:             min_lr
//   constant afterwards:        lr
// where D is optimizer.decay_steps, or max_steps when that is 0 (DESIGN.md's formula).
#pragma once

#include <cstdint>

#include "proto/accum.pb.h"

namespace accum::train {

double learning_rate(const accum::v1::OptimizerSpec& opt, int64_t step, int64_t max_steps);

}  // namespace accum::train
