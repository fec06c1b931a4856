// bench/daemon/job_run.h — one benchmark job: submit, watch to the end, read
// its metrics.
//
// Timing is taken on this process's steady clock: t0 just before SubmitJob,
// then the arrival of the first WatchJob metrics event (the first completed
// optimizer step) and of every later one. The daemon's transition times
// (unix ms) give the STARTING and RUNNING points of the same timeline.
// Throughput comes from the worker's own metrics.jsonl (tokens_per_s and
// step_ms per optimizer step), excluding the first `skip_steps` steps (start-up,
// page faults, caches).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/daemon/bench_connection.h"
#include "proto/accum.pb.h"

namespace accum::bench {

struct JobRunResult {
  std::string id;
  std::string job_dir;
  accum::v1::JobState final_state = accum::v1::JOB_STATE_UNSPECIFIED;
  double submit_rpc_ms = 0;      // the SubmitJob call itself
  double to_starting_ms = -1;    // t0 -> STARTING (daemon clock, unix ms; -1 if not seen)
  double to_running_ms = -1;     // t0 -> RUNNING (rank 0 said hello)
  double to_first_step_ms = -1;  // t0 -> first metrics event on WatchJob
  std::vector<accum::v1::StepMetrics> metrics;  // metrics.jsonl, file order
  // Client-side wall clock: steps after skip_steps, from the arrival of step
  // skip_steps to the arrival of the last step.
  double watched_tokens_per_s = 0;
};

struct Throughput {
  int steps = 0;            // steps counted (after skip_steps)
  double tokens_per_s = 0;  // sum(tokens_per_update) / sum(step_ms): the run's mean rate
  double median_step_tokens_per_s = 0;  // median of the per-step tokens_per_s
};

// Submits `spec` (paths relative to `spec_dir`), watches it to a terminal state
// and reads its metrics.jsonl. `on_first_step(id, job_dir)` runs once the first metrics
// event arrives (the load generator starts there). Fails if the job does not
// end within `timeout` or the stream breaks.
absl::StatusOr<JobRunResult> run_job(
    const BenchConnection& connection, const accum::v1::JobSpec& spec, const std::string& spec_dir,
    int skip_steps,
    const std::function<void(const std::string& id, const std::string& job_dir)>& on_first_step,
    std::chrono::seconds timeout);

// The throughput of steps (skip_steps, end] of a run.
Throughput throughput_of(const std::vector<accum::v1::StepMetrics>& metrics, int skip_steps);

}  // namespace accum::bench
