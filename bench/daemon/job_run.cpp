// bench/daemon/job_run.cpp — submit, WatchJob to the end, metrics.jsonl.
#include "bench/daemon/job_run.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "bench/daemon/latency_stats.h"
#include "google/protobuf/util/json_util.h"

namespace accum::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

double ms_between(SteadyClock::time_point from, SteadyClock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool is_terminal(accum::v1::JobState state) {
  return state == accum::v1::SUCCEEDED || state == accum::v1::FAILED ||
         state == accum::v1::CANCELLED;
}

absl::StatusOr<std::vector<accum::v1::StepMetrics>> read_metrics_jsonl(const std::string& path) {
  std::ifstream file(path);
  if (!file) return absl::NotFoundError(absl::StrCat(path, ": cannot read the job's metrics"));
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  std::vector<accum::v1::StepMetrics> rows;
  int line_number = 0;
  for (std::string line; std::getline(file, line);) {
    ++line_number;
    if (line.empty()) continue;
    accum::v1::StepMetrics metrics;
    auto status = google::protobuf::util::JsonStringToMessage(line, &metrics, options);
    if (!status.ok()) {
      return absl::DataLossError(absl::StrCat(
          path, ":", line_number, ": not a StepMetrics JSON line: ", status.ToString()));
    }
    rows.push_back(std::move(metrics));
  }
  return rows;
}

}  // namespace

absl::StatusOr<JobRunResult> run_job(
    const BenchConnection& connection, const accum::v1::JobSpec& spec, const std::string& spec_dir,
    int skip_steps,
    const std::function<void(const std::string& id, const std::string& job_dir)>& on_first_step,
    std::chrono::seconds timeout) {
  auto stub = accum::v1::Control::NewStub(connection.private_channel());
  JobRunResult result;
  accum::v1::SubmitJobRequest request;
  *request.mutable_spec() = spec;
  request.set_spec_dir(spec_dir);
  accum::v1::SubmitJobResponse response;
  const int64_t t0_unix_ms = unix_ms_now();
  const auto t0 = SteadyClock::now();
  {
    auto context = connection.context(std::chrono::seconds(30));
    const grpc::Status status = stub->SubmitJob(context.get(), request, &response);
    if (!status.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                          absl::StrCat("SubmitJob: ", status.error_message()));
    }
  }
  result.submit_rpc_ms = ms_between(t0, SteadyClock::now());
  result.id = response.job().id();
  result.job_dir = response.job().job_dir();

  accum::v1::WatchJobRequest watch;
  watch.set_id(result.id);
  auto context = connection.context(timeout);
  auto stream = stub->WatchJob(context.get(), watch);
  accum::v1::JobEvent event;
  SteadyClock::time_point skip_arrival{};
  SteadyClock::time_point last_arrival{};
  int64_t skip_step = -1;
  int64_t last_step = -1;
  while (stream->Read(&event)) {
    const auto arrived = SteadyClock::now();
    if (event.has_metrics()) {
      const int64_t step = event.metrics().step();
      if (result.to_first_step_ms < 0) {
        result.to_first_step_ms = ms_between(t0, arrived);
        if (on_first_step) on_first_step(result.id, result.job_dir);
      }
      if (step <= skip_steps || skip_step < 0) {
        skip_step = step;
        skip_arrival = arrived;
      }
      last_step = step;
      last_arrival = arrived;
      continue;
    }
    if (!event.has_status()) continue;
    for (const auto& transition : event.status().transitions()) {
      const double at = static_cast<double>(transition.time_unix_ms() - t0_unix_ms);
      if (transition.state() == accum::v1::STARTING && result.to_starting_ms < 0)
        result.to_starting_ms = at;
      if (transition.state() == accum::v1::RUNNING && result.to_running_ms < 0)
        result.to_running_ms = at;
    }
    if (is_terminal(event.status().state())) {
      result.final_state = event.status().state();
      break;
    }
  }
  const grpc::Status finished = stream->Finish();
  if (!is_terminal(result.final_state)) {
    return absl::DeadlineExceededError(
        absl::StrCat("job ", result.id, " did not end within ", timeout.count(),
                     " s (WatchJob: ", finished.error_message(), ")"));
  }
  auto metrics = read_metrics_jsonl(result.job_dir + "/metrics.jsonl");
  if (!metrics.ok()) return metrics.status();
  result.metrics = *std::move(metrics);
  if (last_step > skip_step && !result.metrics.empty()) {
    const double tokens_per_step = result.metrics.front().tokens_per_s() *
                                   result.metrics.front().step_ms() / 1000.0;  // tokens_per_update
    result.watched_tokens_per_s = tokens_per_step * static_cast<double>(last_step - skip_step) /
                                  (ms_between(skip_arrival, last_arrival) / 1000.0);
  }
  return result;
}

Throughput throughput_of(const std::vector<accum::v1::StepMetrics>& metrics, int skip_steps) {
  Throughput throughput;
  double tokens = 0;
  double milliseconds = 0;
  std::vector<double> per_step;
  for (const auto& m : metrics) {
    if (m.step() <= skip_steps) continue;
    tokens += m.tokens_per_s() * m.step_ms() / 1000.0;  // tokens_per_update of this step
    milliseconds += m.step_ms();
    per_step.push_back(m.tokens_per_s());
  }
  throughput.steps = static_cast<int>(per_step.size());
  throughput.tokens_per_s = milliseconds > 0 ? tokens / (milliseconds / 1000.0) : 0;
  throughput.median_step_tokens_per_s = median(per_step);
  return throughput;
}

}  // namespace accum::bench
