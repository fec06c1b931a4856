// control/prometheus.cpp — rendering the exposition text.
#include "daemon/control/prometheus.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace accum::control {
namespace {

// Floats as Prometheus parses them: shortest round-trip form, NaN, +Inf, -Inf.
std::string number(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  return absl::StrFormat("%.17g", value);
}

void header(std::string* out, const char* name, const char* type, const char* help) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

std::string job_labels(const JobGauges& job) {
  return absl::StrCat("job_id=\"", escape_label_value(job.id), "\",name=\"",
                      escape_label_value(job.name), "\"");
}

// A job whose value is nullopt has no sample (Prometheus's "no value"), not a made-up 0.
void per_job(std::string* out, const DaemonSnapshot& snapshot, const char* name, const char* help,
             std::optional<double> (*value)(const JobGauges&)) {
  header(out, name, "gauge", help);
  for (const auto& job : snapshot.active_jobs) {
    const std::optional<double> v = value(job);
    if (v) absl::StrAppend(out, name, "{", job_labels(job), "} ", number(*v), "\n");
  }
}

}  // namespace

std::string escape_label_value(const std::string& value) {
  std::string escaped;
  escaped.reserve(value.size());
  for (char c : value) {
    if (c == '\\')
      escaped += "\\\\";
    else if (c == '"')
      escaped += "\\\"";
    else if (c == '\n')
      escaped += "\\n";
    else
      escaped += c;
  }
  return escaped;
}

void set_step_gauges(JobGauges* job, const accum::v1::StepMetrics& last) {
  job->step = last.step();
  job->loss = last.has_loss() ? std::optional<double>(last.loss()) : std::nullopt;
  const bool running = job->state == accum::v1::RUNNING;
  job->tokens_per_s = running ? last.tokens_per_s() : 0.0;
  job->model_tflops = running ? last.model_tflops() : 0.0;
}

std::string render_prometheus(const DaemonSnapshot& snapshot) {
  std::string out;
  header(&out, "accumd_job_state", "gauge",
         "1 for the job's current state, 0 for the others (active jobs).");
  for (const auto& job : snapshot.active_jobs) {
    for (int state = accum::v1::QUEUED; state <= accum::v1::CANCELLED; ++state) {
      absl::StrAppend(&out, "accumd_job_state{", job_labels(job), ",state=\"",
                      accum::v1::JobState_Name(static_cast<accum::v1::JobState>(state)), "\"} ",
                      job.state == state ? 1 : 0, "\n");
    }
  }
  per_job(&out, snapshot, "accumd_job_step",
          "Completed optimizer steps, as last reported by rank 0.",
          [](const JobGauges& job) -> std::optional<double> { return job.step; });
  per_job(&out, snapshot, "accumd_job_max_steps", "The job's max_steps.",
          [](const JobGauges& job) -> std::optional<double> { return job.max_steps; });
  per_job(&out, snapshot, "accumd_job_loss",
          "Mean loss over the global batch of the last reported step (no sample when that step "
          "counted no target).",
          [](const JobGauges& job) { return job.loss; });
  per_job(&out, snapshot, "accumd_job_tokens_per_second",
          "Training throughput of the last reported step while the job is RUNNING, else 0.",
          [](const JobGauges& job) -> std::optional<double> { return job.tokens_per_s; });
  per_job(&out, snapshot, "accumd_job_model_tflops",
          "Model FLOP/s per rank / 1e12 of the last reported step, (6 N + 12 L C T) per token, "
          "while the job is RUNNING, else 0.",
          [](const JobGauges& job) -> std::optional<double> { return job.model_tflops; });
  per_job(&out, snapshot, "accumd_job_restarts", "Restarts of the job by the supervisor.",
          [](const JobGauges& job) -> std::optional<double> { return job.restarts; });

  header(&out, "accumd_jobs", "gauge", "Jobs in the store by state.");
  for (int state = accum::v1::QUEUED; state <= accum::v1::CANCELLED; ++state) {
    const auto it = snapshot.jobs_by_state.find(static_cast<accum::v1::JobState>(state));
    absl::StrAppend(&out, "accumd_jobs{state=\"",
                    accum::v1::JobState_Name(static_cast<accum::v1::JobState>(state)), "\"} ",
                    it == snapshot.jobs_by_state.end() ? 0 : it->second, "\n");
  }
  header(&out, "accumd_slots", "gauge", "Ranks (CPU) or GPUs this accumd schedules (--slots).");
  absl::StrAppend(&out, "accumd_slots ", snapshot.slots, "\n");
  header(&out, "accumd_slots_in_use", "gauge", "Slots held by running jobs.");
  absl::StrAppend(&out, "accumd_slots_in_use ", snapshot.slots_in_use, "\n");
  header(&out, "accumd_rpcs_total", "counter", "RPCs answered, by method and status code.");
  for (const auto& [key, count] : snapshot.rpcs) {
    absl::StrAppend(&out, "accumd_rpcs_total{method=\"", escape_label_value(key.first),
                    "\",code=\"", key.second, "\"} ", count, "\n");
  }
  header(&out, "accumd_uptime_seconds", "gauge", "Seconds since accumd started.");
  absl::StrAppend(&out, "accumd_uptime_seconds ", number(snapshot.uptime_s), "\n");
  return out;
}

}  // namespace accum::control
