// control/job_queries.cpp — what JobManager answers about jobs without changing them:
// a job's status (the store's record, with what only the running accumd knows laid over
// it), ListJobs' pages, the Prometheus snapshot, a job's checkpoints, and the start of a
// watch (its status, then its metrics history, then the live events).
#include <algorithm>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/control/job_files.h"
#include "daemon/control/job_manager.h"
#include "daemon/control/job_state.h"
#include "daemon/control/valid_utf8.h"
#include "google/protobuf/util/json_util.h"

namespace accum::control {
using accum::v1::JobStatus;

namespace {

// A ListJobs page's jobs, in bytes: far below the 64 MiB a reply may have.
constexpr size_t kMaxListPageBytes = 4 << 20;

std::vector<accum::v1::StepMetrics> read_metrics_file(const std::string& path) {
  std::vector<accum::v1::StepMetrics> rows;
  std::ifstream file(path);
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  for (std::string line; std::getline(file, line);) {
    accum::v1::StepMetrics metrics;
    if (google::protobuf::util::JsonStringToMessage(line, &metrics, options).ok()) {
      rows.push_back(std::move(metrics));
    }
  }
  if (rows.size() > kMaxHistory) rows.erase(rows.begin(), rows.end() - kMaxHistory);  // newest
  return rows;
}

}  // namespace

absl::StatusOr<JobStatus> JobManager::status_of(const JobRecord& record) {
  JobStatus status;
  status.set_id(record.id);
  status.set_name(record.name);
  status.set_state(record.state);
  *status.mutable_spec() = record.spec;
  *status.mutable_last_metrics() = record.last_metrics;
  status.set_restarts(record.restarts);
  // Messages quote the workers' logs, which may hold any bytes (a file name in Latin-1):
  // a reply that is not UTF-8 is one no client can read.
  status.set_message(valid_utf8(record.message));
  status.set_created_unix_ms(record.created_ms);
  status.set_updated_unix_ms(record.updated_ms);
  status.set_job_dir(valid_utf8(record.job_dir));
  status.set_latest_checkpoint_step(record.latest_checkpoint_step);
  auto transitions = store_->transitions(record.id);
  if (!transitions.ok()) return transitions.status();
  for (auto& transition : *transitions) {
    transition.set_reason(valid_utf8(transition.reason()));
    transition.set_message(valid_utf8(transition.message()));
    *status.add_transitions() = std::move(transition);
  }
  return status;
}

absl::StatusOr<JobStatus> JobManager::get(const std::string& id) {
  if (auto status = check_id(id); !status.ok()) return status;
  auto record = store_->get(id);
  if (!record.ok()) return record.status();
  auto status = status_of(*record);
  if (!status.ok()) return status;
  std::lock_guard lock(mutex_);
  overlay_runtime_locked(&*status);
  return status;
}

void JobManager::overlay_runtime_locked(JobStatus* status) const {
  const auto it = runtimes_.find(status->id());
  if (it == runtimes_.end()) return;
  const Runtime& runtime = it->second;
  // Fresher than the store, which takes progress about once a second.
  if (!runtime.history.empty()) *status->mutable_last_metrics() = runtime.history.back();
  // A state the store refused (a full disk) is the job's state all the same.
  if (status->state() == accum::v1::QUEUED && runtime.world_size > config_.slots) {
    status->set_message(absl::StrCat("waiting: it needs ", runtime.world_size,
                                     " slots, and this accumd has ", config_.slots,
                                     " (--slots); it starts under an accumd with enough"));
  }
  if (runtime.unrecorded) {
    status->set_state(runtime.unrecorded->to);
    status->set_message(absl::StrCat(valid_utf8(runtime.unrecorded->message),
                                     " (not yet in the job store, which refused the write; "
                                     "accumd retries until it takes it)"));
  }
}

accum::v1::JobState JobManager::shown_state_locked(const JobRecord& record) const {
  const auto it = runtimes_.find(record.id);
  return it != runtimes_.end() && it->second.unrecorded ? it->second.unrecorded->to : record.state;
}

absl::StatusOr<DaemonSnapshot> JobManager::metrics_snapshot() {
  DaemonSnapshot snapshot;
  auto counts = store_->count_by_state();
  if (!counts.ok()) return counts.status();
  snapshot.jobs_by_state = *std::move(counts);
  auto active = store_->list_active();
  if (!active.ok()) return active.status();
  std::lock_guard lock(mutex_);
  snapshot.slots = config_.slots;
  snapshot.slots_in_use = slots_in_use_locked();
  for (const auto& record : *active) {
    // Every active job has a runtime; one without has ended since list_active().
    auto it = runtimes_.find(record.id);
    if (it == runtimes_.end()) continue;
    JobGauges job;
    job.id = record.id;
    job.name = record.name;
    // Mirrors the store, and is at least as new as `record`; an outcome the store refused so
    // far (a full disk) is the job's state all the same, as GetJob shows it.
    job.state = it->second.unrecorded ? it->second.unrecorded->to : it->second.state;
    job.restarts = record.restarts;
    job.max_steps = record.spec.max_steps();
    accum::v1::StepMetrics last = record.last_metrics;
    if (!it->second.history.empty()) last = it->second.history.back();  // fresher than the store
    set_step_gauges(&job, last);
    snapshot.active_jobs.push_back(std::move(job));
  }
  return snapshot;
}

absl::StatusOr<JobRecord> JobManager::record(const std::string& id) {
  if (auto status = check_id(id); !status.ok()) return status;
  return store_->get(id);
}

absl::StatusOr<std::pair<std::vector<JobStatus>, std::string>> JobManager::list(
    const std::vector<accum::v1::JobState>& states, int page_size, const std::string& page_token) {
  if (page_size < 0) return absl::InvalidArgumentError("page_size: negative");
  if (page_token.size() > kMaxIdLength) return absl::InvalidArgumentError("page_token: too long");
  const int limit = page_size == 0 ? 100 : std::min(page_size, 1000);
  auto records = store_->list(states, page_token, limit + 1);
  if (!records.ok()) return records.status();
  std::string next;
  if (static_cast<int>(records->size()) > limit) {
    records->resize(limit);
    next = records->back().id;
  }
  std::vector<JobStatus> jobs;
  for (const auto& record : *records) {
    auto status = status_of(record);
    if (!status.ok()) return status.status();
    jobs.push_back(*std::move(status));
  }
  std::lock_guard lock(mutex_);
  for (auto& job : jobs) overlay_runtime_locked(&job);  // as GetJob shows them
  // And at most kMaxListPageBytes a page (at least one job), so that specs near their limit
  // or long restart histories never make a page too big to send: the next page goes on.
  size_t bytes = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    bytes += jobs[i].ByteSizeLong();
    if (i > 0 && bytes > kMaxListPageBytes) {
      jobs.resize(i);
      next = jobs.back().id();
      break;
    }
  }
  return std::make_pair(std::move(jobs), next);
}

absl::StatusOr<std::vector<accum::v1::CheckpointInfo>> JobManager::checkpoints(
    const std::string& id) {
  auto record = this->record(id);
  if (!record.ok()) return record.status();
  return list_job_checkpoints(record->spec.checkpoint().dir());
}

absl::StatusOr<WatchStart> JobManager::watch(const std::string& id) {
  if (auto status = check_id(id); !status.ok()) return status;
  std::lock_guard lock(mutex_);  // no event slips between the snapshot and the subscription
  auto record = store_->get(id);
  if (!record.ok()) return record.status();
  auto status = status_of(*record);
  if (!status.ok()) return status.status();
  WatchStart start;
  auto& first = start.backlog.emplace_back();
  *first.mutable_status() = *status;
  auto it = runtimes_.find(id);
  if (it != runtimes_.end() && !it->second.history.empty()) {
    for (const auto& metrics : it->second.history) {
      *start.backlog.emplace_back().mutable_metrics() = metrics;
    }
  } else {
    // Ended jobs, or jobs re-attached after an accumd restart: the metrics file
    // the worker keeps is the history.
    for (auto& metrics : read_metrics_file(record->spec.metrics_path())) {
      *start.backlog.emplace_back().mutable_metrics() = std::move(metrics);
    }
  }
  // Each step says out of how many (the metrics file's lines do not): an ended job's status
  // comes after them.
  for (auto& event : start.backlog) {
    if (event.has_metrics() && event.metrics().max_steps() == 0) {
      event.mutable_metrics()->set_max_steps(record->spec.max_steps());
    }
  }
  if (!is_terminal(record->state)) {
    start.subscription = hub_.subscribe(id);
  } else {
    // An ended job's stream ends with its final state, as a live watch does: the metrics
    // first, then the status (a script reading the last event gets the outcome either way).
    std::rotate(start.backlog.begin(), start.backlog.begin() + 1, start.backlog.end());
  }
  return start;
}

void JobManager::unwatch(const std::string& id, const std::shared_ptr<JobSubscription>& sub) {
  if (sub) hub_.unsubscribe(id, sub);
}

void JobManager::seed_history_locked(const JobRecord& record, Runtime& runtime) {
  const auto rows = read_metrics_file(record.spec.metrics_path());
  runtime.history.assign(rows.begin(), rows.end());
  runtime.catch_up_through = runtime.history.empty() ? 0 : runtime.history.back().step();
}

}  // namespace accum::control
