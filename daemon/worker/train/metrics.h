// train/metrics.h — one JSON line per optimizer step (DESIGN.md "Metrics") and the
// terminal view: a live progress bar on a TTY, plain lines otherwise.
//
// Thread safety: rank 0's trainer thread only.
#pragma once

#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "proto/accum.pb.h"

namespace accum::train {

// {"step":1,"loss":5.5,"lr":0.001,...} — numbers as JSON numbers, val_loss only when set.
std::string metrics_json(const accum::v1::StepMetrics& metrics);

class MetricsSink {
 public:
  // `path` may be empty (no file). Appends (a resumed run continues the same file,
  // after dropping lines of steps beyond `resume_step` left by an interrupted run).
  absl::Status open(const std::string& path, int64_t resume_step, int log_every_steps);
  ~MetricsSink();
  void write(const accum::v1::StepMetrics& metrics);
  void message(const std::string& line);  // a line that does not break the progress bar
  void finish();

 private:
  std::FILE* file_ = nullptr;
  bool tty_ = false;
  bool bar_drawn_ = false;
  int log_every_ = 1;
};

}  // namespace accum::train
