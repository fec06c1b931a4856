// client/progress_bar.h — one redrawn terminal line for `accumctl watch`:
//   [##########..........]  50/100 steps  loss 2.4312  12.3k tok/s  ETA 0:41  RUNNING
// On a non-terminal, format_step_line() gives one plain line per step instead.
#pragma once

#include <string>

#include "proto/accum.pb.h"

namespace accum::ctl {

// ETA from the mean step time so far: (max_steps - step) * step_ms.
std::string format_progress_bar(const accum::v1::StepMetrics& metrics, int64_t max_steps,
                                const std::string& state, int width = 24);
std::string format_step_line(const accum::v1::StepMetrics& metrics, int64_t max_steps);
std::string format_duration(double seconds);  // "1:05", "1:02:03"
// The loss with `decimals` digits, or "-" for a step that counted no target (all masked).
std::string format_loss(const accum::v1::StepMetrics& metrics, int decimals = 4);

}  // namespace accum::ctl
