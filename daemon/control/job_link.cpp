// control/job_link.cpp — the worker-link half of JobManager: a rank 0's hello (checked
// against the attempt and its link key), its events (metrics into the history and the
// watchers, checkpoints into the store and to waiting CheckpointJob calls; anything out of
// the job's range is dropped) and the link's end.
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "daemon/control/job_files.h"
#include "daemon/control/job_manager.h"
#include "daemon/control/job_state.h"
#include "daemon/worker/io/checkpoint_dir.h"
#include "spdlog/spdlog.h"

namespace accum::control {
namespace fs = std::filesystem;

using accum::v1::JobEvent;
using accum::v1::WorkerCommand;

namespace {

// What is wrong with a worker's event, "" for nothing: a step outside [0, max_steps], or a
// checkpoint that is not a step folder of the job's checkpoint dir.
std::string malformed_event(const accum::v1::WorkerEvent& event, int64_t max_steps,
                            const std::string& checkpoint_dir) {
  if (event.has_metrics() && (event.metrics().step() < 0 || event.metrics().step() > max_steps)) {
    return absl::StrCat("metrics of step ", event.metrics().step(), "; expected 0..", max_steps);
  }
  if (event.has_checkpoint_done()) {
    const auto& done = event.checkpoint_done();
    const fs::path path = done.path();
    const auto step = io::parse_step_dir_name(path.filename().string());
    if (done.step() < 1 || done.step() > max_steps || !step || *step != done.step() ||
        path.parent_path() != fs::path(checkpoint_dir)) {
      return absl::StrCat("checkpoint of step ", done.step(), " at '", done.path(),
                          "'; expected a step of 1..", max_steps, " in ", checkpoint_dir);
    }
  }
  return "";
}

}  // namespace

absl::StatusOr<uint64_t> JobManager::worker_connected(const accum::v1::WorkerHello& hello,
                                                      std::shared_ptr<CommandSink> sink) {
  if (auto status = check_id(hello.job_id()); !status.ok()) return status;
  std::lock_guard lock(mutex_);
  auto record = store_->get(hello.job_id());
  if (!record.ok()) return record.status();
  auto it = runtimes_.find(hello.job_id());
  if (is_terminal(record->state) || it == runtimes_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", hello.job_id(), " is ", state_name(record->state)));
  }
  Runtime& runtime = it->second;
  if (hello.attempt() != runtime.attempt) {
    return absl::FailedPreconditionError(absl::StrCat("job ", hello.job_id(), ": attempt ",
                                                      hello.attempt(), " is stale; current is ",
                                                      runtime.attempt));
  }
  if (!runtime.link_key.empty() && hello.link_key() != runtime.link_key) {
    return absl::PermissionDeniedError(
        absl::StrCat("job ", hello.job_id(), " attempt ", hello.attempt(),
                     ": the hello does not carry the link key accumd gave this attempt's workers "
                     "(ACCUM_LINK_KEY); only they may connect"));
  }
  runtime.link = std::move(sink);
  runtime.link_session = next_session_++;
  runtime.max_steps = record->spec.max_steps();
  runtime.checkpoint_dir = record->spec.checkpoint().dir();
  runtime.last_heard = Clock::now();
  runtime.hello_seen = true;
  if (record->state == accum::v1::STARTING || record->state == accum::v1::RESTARTING) {
    (void)transition_locked(record->id, accum::v1::RUNNING, "worker_hello",
                            absl::StrCat("attempt ", hello.attempt(), ": ", hello.world_size(),
                                         hello.world_size() == 1 ? " rank" : " ranks",
                                         ", from step ", hello.start_step()));
  } else if (record->state == accum::v1::CANCELLING && !runtime.force) {
    WorkerCommand stop;  // re-attached during a graceful cancel: ask again
    stop.set_kind(WorkerCommand::STOP);
    stop.set_request_id(next_request_++);
    runtime.link->send(stop);
  }
  return runtime.link_session;
}

void JobManager::worker_event(const std::string& job_id, uint64_t session,
                              const accum::v1::WorkerEvent& event) {
  std::lock_guard lock(mutex_);
  auto it = runtimes_.find(job_id);
  if (it == runtimes_.end() || it->second.link_session != session) return;
  Runtime& runtime = it->second;
  runtime.last_heard = Clock::now();
  if (const std::string wrong = malformed_event(event, runtime.max_steps, runtime.checkpoint_dir);
      !wrong.empty()) {
    spdlog::warn("job {}: ignored a worker event: {}", job_id, wrong);
    return;
  }
  if (event.has_metrics() && runtime.catch_up_through > 0) {
    if (event.metrics().step() <= runtime.catch_up_through) return;  // already in the history
    runtime.catch_up_through = 0;
  }
  if (event.has_metrics()) {
    if (runtime.history.size() >= kMaxHistory) runtime.history.pop_front();
    runtime.history.push_back(event.metrics());
    JobEvent job_event;
    *job_event.mutable_metrics() = event.metrics();
    hub_.publish(job_id, job_event);
    if (runtime.last_heard - runtime.last_persisted > std::chrono::seconds(1)) {
      runtime.last_persisted = runtime.last_heard;
      (void)store_->set_progress(job_id, event.metrics());
    }
  } else if (event.has_checkpoint_done()) {
    const auto& done = event.checkpoint_done();
    (void)store_->set_latest_checkpoint(job_id, done.step());
    accum::v1::CheckpointInfo info;
    info.set_step(done.step());
    info.set_path(done.path());
    for (const auto& listed : list_job_checkpoints(fs::path(done.path()).parent_path().string())) {
      if (listed.step() == done.step()) info = listed;
    }
    info.set_path(done.path());
    spdlog::info("job {}: checkpoint at step {} complete: {}", job_id, done.step(), done.path());
    if (done.request_id() != 0) {
      runtime.checkpoints_done[done.request_id()] = info;
      checkpoint_done_.notify_all();
    }
  }
}

void JobManager::worker_disconnected(const std::string& job_id, uint64_t session) {
  std::lock_guard lock(mutex_);
  auto it = runtimes_.find(job_id);
  if (it == runtimes_.end() || it->second.link_session != session) return;
  it->second.link.reset();
  spdlog::info("job {}: worker link closed", job_id);
}

}  // namespace accum::control
