// control/prometheus.h — accumd's state in the Prometheus text exposition
// format (version 0.0.4), served by metrics_http.h at GET /metrics.
//
// Per active job (QUEUED .. CANCELLING; finished jobs leave the per-job series
// so their number stays bounded, and are counted in accumd_jobs):
//   accumd_job_state{job_id,name,state}   1 for the current state, 0 for the others
//   accumd_job_step{job_id,name}          completed optimizer steps (last report)
//   accumd_job_max_steps{job_id,name}
//   accumd_job_loss{job_id,name}          loss of that step (no sample if it counted no target)
//   accumd_job_tokens_per_second{job_id,name}   that step's rate while RUNNING, else 0
//   accumd_job_model_tflops{job_id,name}        likewise
//   accumd_job_restarts{job_id,name}
// Daemon-wide:
//   accumd_jobs{state}                    jobs in the store by state (all of them)
//   accumd_slots, accumd_slots_in_use
//   accumd_rpcs_total{method,code}        RPCs answered (counter); methods accumd does not
//                                         serve count as method="unknown" (rpc_stats.h)
//   accumd_uptime_seconds
// The label is `job_id`, not `job`: Prometheus reserves `job` for the scrape job.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "proto/accum.pb.h"

namespace accum::control {

struct JobGauges {
  std::string id;
  std::string name;
  accum::v1::JobState state = accum::v1::QUEUED;
  int64_t step = 0;
  int64_t max_steps = 0;
  std::optional<double> loss;  // none before the first step, or when it counted no target
  double tokens_per_s = 0;     // 0 while the job is not RUNNING
  double model_tflops = 0;     // per rank (StepMetrics.model_tflops); 0 while not RUNNING
  int restarts = 0;
};

struct DaemonSnapshot {
  std::vector<JobGauges> active_jobs;
  std::map<accum::v1::JobState, int64_t> jobs_by_state;  // states with no job may be absent
  int slots = 0;
  int slots_in_use = 0;
  std::map<std::pair<std::string, std::string>, int64_t> rpcs;  // (method, code) -> count
  double uptime_s = 0;
};

// The exposition text (ends with a newline). Pure function.
std::string render_prometheus(const DaemonSnapshot& snapshot);

// Fills job's step, loss, tokens/s and TFLOP/s from its last reported step; job->state must
// be set. The loss stays unset for a step that counted no target; the rates stay 0 unless the
// job is RUNNING (a RESTARTING job trains nothing, whatever its last step did).
void set_step_gauges(JobGauges* job, const accum::v1::StepMetrics& last);

// A label value with \, " and newline escaped as the format requires.
std::string escape_label_value(const std::string& value);

}  // namespace accum::control
