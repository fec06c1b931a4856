// train/lr_schedule.h — learning rate at optimizer step s (0-based), DESIGN.md "Optimizer":
//   s < warmup:          lr * (s+1) / warmup
//   cosine afterwards:   min_lr + 0.5 * (1 + cos(pi * (s-warmup) / (max_steps-warmup))) * (lr -
//   min_lr) constant afterwards: lr
#pragma once

#include <cstdint>

#include "proto/accum.pb.h"

namespace accum::train {

double learning_rate(const accum::v1::OptimizerSpec& opt, int64_t step, int64_t max_steps);

}  // namespace accum::train
