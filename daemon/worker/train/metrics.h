// train/metrics.h — one JSON line per optimizer step (DESIGN.md "Metrics") and the
// terminal view: a live progress bar on a TTY, plain lines otherwise.
//
// Thread safety: rank 0's trainer thread only.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "proto/accum.pb.h"

namespace accum::train {

// Communication counters of one optimizer step beyond StepMetrics' own (JSONL only; the
// proto carries collectives, bytes_reduced and comm_exposed_ms). They let a reader check
// the accumulation contract from the metrics alone: no collective before the last
// micro-step, each gradient bucket reduced once, each parameter bucket gathered once.
struct StepCommDetail {
  // 0-based micro-step during whose backward rank 0 issued its first gradient
  // collective; -1 when it issued none (a world of one still reduces, as a copy).
  int64_t first_gradient_collective_micro_step = -1;
  // Collectives of any kind issued during micro-steps 0..K-2, summed over all ranks.
  int64_t collectives_before_last_micro_step = 0;
  int64_t param_collectives = 0;  // ZeRO-1 parameter all-gathers (one per bucket)
  int64_t bytes_gathered = 0;     // their payload bytes (the parameter size once)
  double gather_exposed_ms = 0;   // time blocked in those all-gathers
  // Every collective of the step on rank 0 (gradient buckets, the scalar exchange, the
  // ZeRO-1 norm, the all-gathers), before any evaluation or checkpoint.
  int64_t step_collectives = 0;
};

// {"step":1,"loss":5.5,"lr":0.001,...} — numbers as JSON numbers, val_loss only when set;
// the StepCommDetail fields follow when `detail` is given.
std::string metrics_json(const accum::v1::StepMetrics& metrics,
                         const StepCommDetail* detail = nullptr);

class MetricsSink {
 public:
  // `path` may be empty (no file). Appends (a resumed run continues the same file,
  // after dropping lines of steps beyond `resume_step` left by an interrupted run, and an
  // unfinished last line). A line that cannot be written whole (a full disk) is dropped
  // whole, with a warning on stderr: the file only ever holds whole lines.
  absl::Status open(const std::string& path, int64_t resume_step, int log_every_steps);
  ~MetricsSink();
  MetricsSink() = default;
  MetricsSink(const MetricsSink&) = delete;
  MetricsSink& operator=(const MetricsSink&) = delete;
  void write(const accum::v1::StepMetrics& metrics, const StepCommDetail* detail = nullptr);
  void message(const std::string& line);  // a line that does not break the progress bar
  void finish();

 private:
  void append(const std::string& line);

  std::string path_;
  int fd_ = -1;
  int64_t lost_lines_ = 0;  // since the last line written whole
  bool tty_ = false;
  bool bar_drawn_ = false;
  int log_every_ = 1;
};

}  // namespace accum::train
