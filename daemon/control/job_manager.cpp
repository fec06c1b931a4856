// control/job_manager.cpp — JobManager's API: submit (with the checks a first attempt
// would otherwise meet), query, cancel, checkpoint, continue, watch. The supervisor loop is
// in job_supervision.cpp, the worker link's hello and events in job_link.cpp.
#include "daemon/control/job_manager.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/control/job_files.h"
#include "daemon/control/job_state.h"
#include "daemon/control/resume_point.h"
#include "daemon/control/valid_utf8.h"
#include "daemon/spec/lr_schedule.h"
#include "daemon/spec/spec.h"
#include "daemon/worker/data/token_stream.h"
#include "daemon/worker/io/checkpoint_dir.h"
#include "google/protobuf/util/json_util.h"
#include "spdlog/spdlog.h"

namespace accum::control {
namespace fs = std::filesystem;
using accum::v1::JobEvent;
using accum::v1::JobStatus;
using accum::v1::WorkerCommand;

namespace {

constexpr size_t kMaxIdLength = 64;

// TEST ONLY: with ACCUM_TEST_EXIT_IN_FORCE_CANCEL set to `point` ("before_kill": the force
// cancel is recorded, its SIGKILL not sent; "after_kill": sent, the exit not handled) in its
// environment, accumd exits (code 86) there, the windows an accumd restart must finish a force
// cancel from (tests/daemon/e2e_recovery_pending_test.cpp). Never set it in production.
constexpr int kExitInForceCancelCode = 86;
void exit_in_force_cancel_for_test(const char* point) {
  static const char* const configured = std::getenv("ACCUM_TEST_EXIT_IN_FORCE_CANCEL");
  if (configured != nullptr && std::strcmp(configured, point) == 0) _exit(kExitInForceCancelCode);
}

// A path mpirun reads when the job starts: "" (not set) or a regular file this process
// can read, checked at submit so that a typo is not a failed attempt later.
absl::Status check_readable_file(const std::string& field, const std::string& path) {
  if (path.empty()) return absl::OkStatus();
  std::error_code error;
  const auto status = fs::status(path, error);
  if (!fs::exists(status)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": '", path, "' does not exist; expected a readable file"));
  }
  if (!fs::is_regular_file(status)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": '", path, "' is not a regular file; expected a readable file"));
  }
  if (::access(path.c_str(), R_OK) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": '", path, "' cannot be read (", std::strerror(errno), ")"));
  }
  return absl::OkStatus();
}

constexpr size_t kMaxSpecBytes = 256 << 10;
// A ListJobs page's jobs, in bytes: far below the 64 MiB a reply may have.
constexpr size_t kMaxListPageBytes = 4 << 20;

// The files data.train or data.val name, as the worker will expand them (globs in order,
// each matching at least one file): each must be a readable file. Checked at submit, so a
// typo or an empty glob is refused with its field instead of failing the first attempt.
absl::Status check_data_files(const std::string& field,
                              const google::protobuf::RepeatedPtrField<std::string>& paths) {
  if (paths.empty()) return absl::OkStatus();
  auto files = data::expand_paths(std::vector<std::string>(paths.begin(), paths.end()));
  if (!files.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", files.status().message()));
  }
  for (const auto& file : *files) {
    if (auto status = check_readable_file(field, file); !status.ok()) return status;
  }
  return absl::OkStatus();
}

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

absl::Status check_id(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("id: empty; expected a job id like job-000001");
  if (id.size() > kMaxIdLength) {
    return absl::InvalidArgumentError(absl::StrCat("id: ", id.size(), " bytes; at most 64"));
  }
  return absl::OkStatus();
}

JobManager::JobManager(ManagerConfig config, std::unique_ptr<JobStore> store)
    : config_(std::move(config)), store_(std::move(store)) {}

JobManager::~JobManager() { shutdown(); }

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::create(ManagerConfig config) {
  std::error_code error;
  fs::create_directories(config.state_dir + "/jobs", error);
  if (error) {
    return absl::UnavailableError(
        absl::StrCat("--state-dir ", config.state_dir, ": cannot create: ", error.message()));
  }
  config.state_dir = fs::canonical(config.state_dir).string();
  auto store = JobStore::open(config.state_dir + "/accumd.db");
  if (!store.ok()) return store.status();
  std::unique_ptr<JobManager> manager(new JobManager(std::move(config), *std::move(store)));
  manager->recover_deletes();
  if (auto status = manager->reconcile(); !status.ok()) return status;
  return manager;
}

void JobManager::start() {
  supervisor_ = std::thread([this] { supervise_loop(); });
}

void JobManager::shutdown() {
  if (stopping_.exchange(true)) return;
  checkpoint_done_.notify_all();
  if (supervisor_.joinable()) supervisor_.join();
  hub_.close_all();
}

int JobManager::max_restarts(const JobRecord& record) const {
  // submit() fills an unset value; the fallback is for a record that somehow lacks it.
  return record.spec.has_max_restarts() ? record.spec.max_restarts() : config_.default_max_restarts;
}

absl::StatusOr<JobStatus> JobManager::submit(accum::v1::JobSpec spec, const std::string& spec_dir,
                                             const std::string& note) {
  if (spec_dir.size() > 4096) return absl::InvalidArgumentError("spec_dir: longer than 4096 bytes");
  // Every job's spec travels in each ListJobs answer and sits in the job store: a huge one
  // (thousands of listed paths) would make `list` too big for any client.
  if (const size_t bytes = spec.ByteSizeLong(); bytes > kMaxSpecBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the spec is ", bytes, " bytes (data.train lists ", spec.data().train_size(),
        " paths); expected at most ", kMaxSpecBytes, ": name many data files with one glob"));
  }
  if (!spec_dir.empty() && spec_dir.front() != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("spec_dir: '", spec_dir, "' is relative; expected an absolute folder"));
  }
  const std::string base = spec_dir.empty() ? fs::current_path().string() : spec_dir;
  spec::resolve_paths(&spec, base);
  // The validator judges world_size (a left-out 0 becomes 1, a negative is refused).
  if (auto status = spec::validate_and_fill(&spec); !status.ok()) return status;
  const int world_size = spec.world_size();
  // Fixed now, so the job's status shows the number it runs under and an accumd
  // restarted with another --max-restarts does not change it.
  if (!spec.has_max_restarts()) spec.set_max_restarts(config_.default_max_restarts);
  if (auto steps = spec::grad_accum_steps(spec, world_size); !steps.ok()) return steps.status();
  if (world_size > config_.slots) {
    return absl::ResourceExhaustedError(absl::StrCat("world_size: ", world_size,
                                                     " ranks, but this accumd has only ",
                                                     config_.slots, " slots (--slots)"));
  }
  if (auto status = check_data_files("data.train", spec.data().train()); !status.ok())
    return status;
  if (auto status = check_data_files("data.val", spec.data().val()); !status.ok()) return status;
  if (auto status = check_readable_file("init_from", spec.init_from()); !status.ok()) return status;
  if (auto status = check_readable_file("launch.hostfile", spec.launch().hostfile()); !status.ok())
    return status;
  if (auto status = check_job_mpirun_args(spec.launch()); !status.ok()) return status;
  if (auto status = check_resume_from(spec); !status.ok()) return status;

  std::lock_guard lock(mutex_);
  int queued = 0;
  for (const auto& [id, runtime] : runtimes_) queued += runtime.pid == 0 ? 1 : 0;
  if (queued >= config_.max_queued) {
    return absl::ResourceExhaustedError(
        absl::StrCat("queue full: ", queued, " jobs are waiting (limit ", config_.max_queued, ")"));
  }
  auto id = store_->next_id();
  if (!id.ok()) return id.status();
  JobRecord record;
  record.id = *id;
  record.name = spec.name().empty() ? *id : spec.name();
  record.state = accum::v1::QUEUED;
  record.spec_dir = base;
  record.job_dir = absl::StrCat(config_.state_dir, "/jobs/", *id);
  record.world_size = world_size;
  // The daemon owns where a job writes, so restarts find their checkpoints. A
  // resume_from path is kept: the attempts start from it until the job has its own
  // checkpoint (resume_point.h).
  spec.set_metrics_path(record.job_dir + "/metrics.jsonl");
  spec.mutable_checkpoint()->set_dir(record.job_dir + "/checkpoints");
  if (!resumes_from_path(spec)) spec.mutable_checkpoint()->set_resume_from("latest");
  record.spec = spec;
  // A submit that fails from here on (a full disk, say) leaves no job folder behind.
  auto refuse = [&](absl::Status status) {
    std::error_code ignored;
    fs::remove_all(record.job_dir, ignored);
    return status;
  };
  // Durably (the parents fsynced), as the job record will be: see write_job_spec().
  for (const char* sub : {"/checkpoints", "/logs"}) {
    if (auto status = io::create_directories_durable(record.job_dir + sub); !status.ok()) {
      return refuse(state_dir_error(status, "cannot create the job's folder"));
    }
  }
  if (auto status = write_job_spec(record.job_dir, spec); !status.ok()) return refuse(status);
  record.message = note.empty() ? "waiting for slots" : absl::StrCat(note, "; waiting for slots");
  if (auto status = store_->insert(record, "submitted"); !status.ok()) return refuse(status);
  Runtime& runtime = runtimes_[record.id];
  runtime.world_size = world_size;
  spdlog::info("job {} '{}' queued: world_size {}, {} steps", record.id, record.name, world_size,
               spec.max_steps());
  start_queued_locked();
  auto stored = store_->get(record.id);
  if (!stored.ok()) return stored.status();
  auto status = status_of(*stored);
  if (!status.ok()) return status;
  overlay_runtime_locked(&*status);  // a launch that failed just now, not yet in the store
  return status;
}

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

absl::Status JobManager::transition_locked(const std::string& id, accum::v1::JobState to,
                                           const std::string& reason, const std::string& message,
                                           const TransitionUpdate& update) {
  // A job's final metrics are stored before its terminal state is: a client that reacts
  // to the terminal event (GetJob when WatchJob ends) must find them in the store, not
  // the last throttled progress (set_progress runs at most once a second while running).
  if (is_terminal(to)) {
    if (auto it = runtimes_.find(id); it != runtimes_.end() && !it->second.history.empty()) {
      (void)store_->set_progress(id, it->second.history.back());
    }
  }
  if (auto status = store_->transition(id, to, reason, message, update); !status.ok()) {
    return status;
  }
  if (auto it = runtimes_.find(id); it != runtimes_.end()) it->second.state = to;
  spdlog::info("job {} -> {} ({}){}{}", id, state_name(to), reason, message.empty() ? "" : ": ",
               message);
  auto record = store_->get(id);
  if (!record.ok()) return absl::OkStatus();
  auto status = status_of(*record);
  if (!status.ok()) return absl::OkStatus();
  if (auto it = runtimes_.find(id); it != runtimes_.end() && !it->second.history.empty()) {
    *status->mutable_last_metrics() = it->second.history.back();
  }
  JobEvent event;
  *event.mutable_status() = *std::move(status);
  hub_.publish(id, event);
  if (is_terminal(to)) {
    runtimes_.erase(id);
    checkpoint_done_.notify_all();
  }
  return absl::OkStatus();
}

absl::StatusOr<JobStatus> JobManager::cancel(const std::string& id, bool force) {
  if (auto status = check_id(id); !status.ok()) return status;
  {
    std::lock_guard lock(mutex_);
    // An outcome the store has refused so far (a failed launch or an exit, on a full disk) is
    // tried again first: a cancel must neither hide a job's end behind CANCELLED nor count as
    // what ended it.
    if (auto status = settle_unrecorded_end_locked(id, ""); !status.ok()) return status;
    auto record = store_->get(id);
    if (!record.ok()) return record.status();
    if (is_terminal(record->state)) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", id, " already ended (", state_name(record->state), ")"));
    }
    Runtime& runtime = runtimes_[id];
    if (runtime.pid == 0) {
      // Nothing runs (queued, or waiting to restart): cancelled at once.
      if (auto status = transition_locked(
              id, accum::v1::CANCELLED, force ? "force_cancel" : "cancel",
              runtime.state == accum::v1::RESTARTING ? "cancelled while it waited to restart"
                                                     : "cancelled before it ran");
          !status.ok()) {
        return status;
      }
      start_queued_locked();
    } else if (force || record->state != accum::v1::CANCELLING) {
      // A force cancel is durable before its SIGKILL: an accumd restarted before the exit is
      // handled kills what still runs and records the end as this one would (reconcile).
      if (record->state != accum::v1::CANCELLING) {
        TransitionUpdate update;
        update.force_cancel = force;
        auto status = transition_locked(
            id, accum::v1::CANCELLING, force ? "force_cancel" : "cancel",
            force ? "killing the workers (SIGKILL)" : "asking the workers to checkpoint and stop",
            update);
        if (!status.ok()) return status;
      } else if (force && !record->force_cancel) {
        if (auto status = store_->set_force_cancel(id); !status.ok()) return status;
      }
      runtime.force = runtime.force || force;
      runtime.cancel_at = Clock::now();
      runtime.cancel_escalation = 0;
      if (force) {
        exit_in_force_cancel_for_test("before_kill");
        signal_process_tree(runtime.pid, SIGKILL);
        runtime.cancel_escalation = 2;
        exit_in_force_cancel_for_test("after_kill");
      } else if (runtime.link) {
        WorkerCommand command;
        command.set_kind(WorkerCommand::STOP);
        command.set_request_id(next_request_++);
        runtime.link->send(command);
      } else {
        signal_process_leaves(runtime.pid, SIGTERM);  // no link yet: the worker's own handler
        runtime.cancel_escalation = 1;
      }
    }
  }
  return get(id);
}

absl::StatusOr<accum::v1::CheckpointInfo> JobManager::checkpoint(
    const std::string& id, Clock::time_point deadline, const std::function<bool()>& client_gone) {
  // Client cancellation cannot wake the wait: it is polled this often.
  constexpr auto kPollClient = std::chrono::milliseconds(100);
  if (auto status = check_id(id); !status.ok()) return status;
  std::unique_lock lock(mutex_);
  auto record = store_->get(id);
  if (!record.ok()) return record.status();
  auto it = runtimes_.find(id);
  if (record->state != accum::v1::RUNNING || it == runtimes_.end() || !it->second.link) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, " is ", state_name(record->state),
                     record->state == accum::v1::RUNNING
                         ? " but its worker is not connected (it is starting, or has just ended)"
                         : "",
                     "; a checkpoint needs a RUNNING job"));
  }
  const uint64_t request_id = next_request_++;
  // The request lives in this attempt's worker only: a restarted attempt never answers it.
  const int attempt = it->second.attempt;
  WorkerCommand command;
  command.set_kind(WorkerCommand::CHECKPOINT);
  command.set_request_id(request_id);
  it->second.link->send(command);
  spdlog::info("job {}: checkpoint request {} sent to attempt {}", id, request_id, attempt);
  while (true) {
    auto runtime = runtimes_.find(id);
    if (runtime == runtimes_.end()) {
      return absl::AbortedError(absl::StrCat("job ", id, " ended before the checkpoint completed"));
    }
    if (auto done = runtime->second.checkpoints_done.find(request_id);
        done != runtime->second.checkpoints_done.end()) {
      auto info = done->second;
      runtime->second.checkpoints_done.erase(done);
      return info;
    }
    if (runtime->second.attempt != attempt || runtime->second.pid == 0) {
      return absl::AbortedError(absl::StrCat(
          "job ", id, ": attempt ", attempt, " ended before the checkpoint was written (request ",
          request_id, "); the job is ", state_name(runtime->second.state)));
    }
    if (stopping_) return absl::UnavailableError("accumd is shutting down");
    if (client_gone && client_gone()) {
      spdlog::info("job {}: checkpoint request {}: the client went away; no longer waiting", id,
                   request_id);
      return absl::CancelledError(absl::StrCat("job ", id, ": checkpoint request ", request_id,
                                               " cancelled by the client"));
    }
    if (Clock::now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("job ", id, ": checkpoint request ",
                                                      request_id, " did not complete in time"));
    }
    checkpoint_done_.wait_until(lock, std::min(deadline, Clock::now() + kPollClient));
  }
}

absl::StatusOr<JobStatus> JobManager::continue_job(const std::string& id, int64_t max_steps) {
  if (max_steps < 0 || max_steps > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_steps: got ", max_steps, "; expected 0 (the job's own) or a step count ",
                     "of at most ", std::numeric_limits<int32_t>::max()));
  }
  {
    std::lock_guard lock(mutex_);
    if (auto status = settle_unrecorded_end_locked(id, "; continue it once the store takes writes");
        !status.ok()) {
      return status;
    }
  }
  auto record = this->record(id);
  if (!record.ok()) return record.status();
  if (!is_terminal(record->state)) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, " is ", state_name(record->state),
                     ": a job continues once it has ended (a graceful cancel ends it with a "
                     "checkpoint)"));
  }
  // Its own newest checkpoint that verifies (sha256 of every file, as the worker will check
  // it: a damaged one would only fail the new job); or, if it wrote none, the one it
  // started from.
  std::optional<accum::v1::CheckpointInfo> point;
  const auto listed = list_job_checkpoints(record->spec.checkpoint().dir());
  std::vector<std::string> damaged;
  for (auto it = listed.rbegin(); it != listed.rend() && !point; ++it) {
    if (const absl::Status verified = io::verify_checkpoint(it->path()); !verified.ok()) {
      spdlog::warn("continue {}: checkpoint {} does not verify: {}", id, it->path(),
                   std::string(verified.message()));
      damaged.push_back(absl::StrCat("step ", it->step(), ": ", verified.message()));
    } else {
      point = *it;
    }
  }
  if (!listed.empty() && !point) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, " has no checkpoint that verifies (in ",
                     record->spec.checkpoint().dir(), "): ", absl::StrJoin(damaged, "; ")));
  }
  if (listed.empty() && resumes_from_path(record->spec)) {
    // Complete as list_job_checkpoints counts it: a step directory with its manifest.
    const fs::path from = record->spec.checkpoint().resume_from();
    const auto step = io::parse_step_dir_name(from.filename().string());
    std::error_code error;
    if (step && fs::exists(from / "manifest.json", error)) {
      point.emplace();
      point->set_step(*step);
      point->set_path(from.string());
    }
  }
  if (!point) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, " has no complete checkpoint to continue from (in ",
                     record->spec.checkpoint().dir(), ")"));
  }
  accum::v1::JobSpec spec = record->spec;
  if (max_steps > 0) spec.set_max_steps(max_steps);
  if (spec.max_steps() <= point->step()) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_steps: ", spec.max_steps(), " leaves nothing to train: job ", id,
                     "'s latest checkpoint is at step ", point->step(), "; expected more"));
  }
  spec.mutable_checkpoint()->set_resume_from(point->path());
  spec.clear_init_from();  // a resume reads the checkpoint's weights, never init_from
  std::string note = absl::StrCat("continues ", id, " from its checkpoint at step ", point->step());
  if (!damaged.empty()) {
    absl::StrAppend(&note, " (newer ones do not verify: ", absl::StrJoin(damaged, "; "), ")");
  }
  const std::string curve = accum::spec::schedule_change_note(
      spec.optimizer(), point->step(), record->spec.max_steps(), spec.max_steps());
  if (!curve.empty()) {
    absl::StrAppend(&note, "; ", curve, " (optimizer.decay_steps in a spec keeps one curve)");
  }
  return submit(std::move(spec), record->spec_dir, note);
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
