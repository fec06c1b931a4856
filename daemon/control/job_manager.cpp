// control/job_manager.cpp — JobManager's API that changes jobs: submit (with the checks a
// first attempt would otherwise meet), cancel, checkpoint, continue. What it answers about
// jobs is in job_queries.cpp, the supervisor loop in job_supervision.cpp, the worker link's
// hello and events in job_link.cpp.
#include "daemon/control/job_manager.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/control/job_files.h"
#include "daemon/control/job_state.h"
#include "daemon/control/resume_point.h"
#include "daemon/spec/lr_schedule.h"
#include "daemon/spec/spec.h"
#include "daemon/worker/data/token_stream.h"
#include "daemon/worker/io/checkpoint_dir.h"
#include "spdlog/spdlog.h"

namespace accum::control {
namespace fs = std::filesystem;
using accum::v1::JobEvent;
using accum::v1::JobStatus;
using accum::v1::WorkerCommand;

namespace {

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

// What a submission's note says when the spec names its own checkpoint.dir or metrics_path
// (resolved against `base`): accumd writes them in the job's folder instead, which is where
// its restarts and `continue` look. "" when the spec leaves them at accum-worker's defaults
// (checkpoints/ and metrics.jsonl beside the spec), as the example specs do.
std::string moved_outputs_note(const accum::v1::JobSpec& spec, const std::string& base,
                               const std::string& job_dir) {
  const auto beside_spec = [&](const char* name) {
    return (fs::path(base) / name).lexically_normal().string();
  };
  std::vector<std::string> chosen;
  if (spec.checkpoint().dir() != beside_spec("checkpoints")) {
    chosen.push_back(absl::StrCat("checkpoint.dir ", spec.checkpoint().dir()));
  }
  if (!spec.metrics_path().empty() && spec.metrics_path() != beside_spec("metrics.jsonl")) {
    chosen.push_back(absl::StrCat("metrics_path ", spec.metrics_path()));
  }
  if (chosen.empty()) return "";
  return absl::StrCat("its checkpoints and metrics go to its folder, ", job_dir,
                      ", where accumd keeps them for its restarts and `continue`, not to the "
                      "spec's ",
                      absl::StrJoin(chosen, " and "), " (those apply to accum-worker run by hand)");
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
  if (auto status = check_init_from(spec); !status.ok()) return status;

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
  // checkpoint (resume_point.h). A place the spec chose is not used, and the submission's
  // note says so.
  std::string full_note = note;
  if (const std::string moved = moved_outputs_note(spec, base, record.job_dir); !moved.empty()) {
    full_note = note.empty() ? moved : absl::StrCat(note, "; ", moved);
  }
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
  record.message =
      full_note.empty() ? "waiting for slots" : absl::StrCat(full_note, "; waiting for slots");
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
    const accum::v1::JobState shown = shown_state_locked(*record);
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, " is ", state_name(shown),
                     shown == accum::v1::RUNNING
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
  if (auto status = check_id(id); !status.ok()) return status;
  absl::StatusOr<JobRecord> record;
  {
    std::lock_guard lock(mutex_);
    if (auto status = settle_unrecorded_end_locked(id, "; continue it once the store takes writes");
        !status.ok()) {
      return status;
    }
    record = store_->get(id);
    if (!record.ok()) return record.status();
    if (!is_terminal(record->state)) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", id, " is ", state_name(shown_state_locked(*record)),
                       ": a job continues once it has ended (a graceful cancel ends it with a "
                       "checkpoint)"));
    }
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
  // The old job's folder is no place the user chose: submit() puts the new job's in its own.
  spec.mutable_checkpoint()->clear_dir();
  spec.clear_metrics_path();
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

}  // namespace accum::control
