// control/job_supervision.cpp — the supervisor half of JobManager: launching
// queued jobs FIFO when slots are free, noticing exits (waitpid for our own
// children, /proc + the exit-code file for re-attached ones), restarting from
// the latest checkpoint with exponential backoff (but failing at once a job whose
// worker rejected its input), heartbeat timeouts, the STOP -> SIGTERM -> SIGKILL
// escalation of a graceful cancel, and the reconciliation of jobs left active by
// a previous accumd.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "daemon/control/job_files.h"
#include "daemon/control/job_manager.h"
#include "daemon/control/job_state.h"
#include "daemon/control/restart_backoff.h"
#include "daemon/control/resume_point.h"
#include "daemon/control/valid_utf8.h"
#include "daemon/worker/exit_codes.h"
#include "spdlog/spdlog.h"

namespace accum::control {
namespace {

constexpr auto kTick = std::chrono::milliseconds(100);

int64_t latest_step(const JobRecord& record) {
  const auto listed = list_job_checkpoints(record.spec.checkpoint().dir());
  return listed.empty() ? 0 : listed.back().step();
}

// TEST ONLY: with ACCUM_TEST_EXIT_AFTER_SPAWN=1 in its environment, accumd exits (code 86)
// right after it spawned an attempt and before it recorded the pid, the window a crash
// during a launch hits (tests/daemon/e2e_supervision_test.cpp). Never set it in production.
constexpr int kExitAfterSpawnCode = 86;
bool exit_after_spawn_for_test() {
  static const bool enabled = [] {
    const char* value = std::getenv("ACCUM_TEST_EXIT_AFTER_SPAWN");
    return value != nullptr && std::string(value) == "1";
  }();
  return enabled;
}

// Kills what still runs of a launch accumd is not attached to (found by the job folder
// every launched process carries in its environment, launcher.h), and waits until it is gone.
// Returns how many processes it found.
size_t kill_stray_processes(const JobRecord& record) {
  constexpr auto kWaitForExit = std::chrono::seconds(10);
  auto strays = processes_with_env(kJobDirEnv, record.job_dir);
  const size_t found = strays.size();
  if (strays.empty()) return 0;
  spdlog::warn("job {}: killing {} stray process(es) of an earlier launch (attempt {})", record.id,
               strays.size(), record.attempt);
  const auto deadline = Clock::now() + kWaitForExit;
  while (!strays.empty() && Clock::now() < deadline) {
    for (pid_t pid : strays) kill(pid, SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    strays = processes_with_env(kJobDirEnv, record.job_dir);
  }
  if (!strays.empty()) {
    spdlog::error("job {}: {} stray process(es) still alive {} s after SIGKILL (pid {})", record.id,
                  strays.size(), kWaitForExit.count(), strays.front());
  }
  return found;
}

}  // namespace

void JobManager::supervise_loop() {
  while (!stopping_) {
    tick();
    std::this_thread::sleep_for(kTick);
  }
}

int JobManager::slots_in_use_locked() {
  int used = 0;
  for (const auto& [id, runtime] : runtimes_) {
    if (runtime.state != accum::v1::QUEUED) used += runtime.world_size;
  }
  return used;
}

void JobManager::tick() {
  std::lock_guard lock(mutex_);
  const auto now = Clock::now();
  std::vector<std::string> ids;
  for (const auto& [id, runtime] : runtimes_) ids.push_back(id);
  for (const auto& id : ids) {
    auto it = runtimes_.find(id);
    if (it == runtimes_.end()) continue;
    Runtime& runtime = it->second;
    if (runtime.unrecorded) {
      settle_locked(id, runtime, *runtime.unrecorded);
      continue;
    }
    if (runtime.state == accum::v1::QUEUED) continue;
    auto record = store_->get(id);
    if (!record.ok()) continue;
    if (runtime.pid != 0) {
      if (runtime.is_child) {
        if (auto status = try_reap(runtime.pid)) {
          handle_exit_locked(*record, runtime, *status, true);
          continue;
        }
      } else if (!process_alive(runtime.pid, runtime.start_ticks)) {
        const auto code =
            read_exit_code_file(attempt_log_dir(record->job_dir, runtime.attempt) + "/exit_code");
        handle_exit_locked(*record, runtime, code ? (*code << 8) : 0, code.has_value());
        continue;
      }
      if (runtime.state == accum::v1::CANCELLING) {
        check_cancel_locked(*record, runtime, now);
      } else if (runtime.kill_reason.empty()) {
        check_silence_locked(runtime, id, now);
      }
    } else if (runtime.state == accum::v1::RESTARTING && now >= runtime.restart_at) {
      start_attempt_locked(*record, runtime);
    }
  }
  start_queued_locked();
}

void JobManager::check_silence_locked(Runtime& runtime, const std::string& id,
                                      Clock::time_point now) {
  // Before the hello, last_heard is when the attempt was launched (or re-attached): a
  // worker that never connects (a wrong --advertise, a firewall, a hang before the
  // hello) is not waited for forever.
  const auto silent = now - runtime.last_heard;
  const auto timeout = runtime.hello_seen ? config_.heartbeat_timeout : config_.hello_timeout;
  if (silent <= timeout) return;
  runtime.kill_reason =
      absl::StrCat(runtime.hello_seen ? "no heartbeat for " : "no hello from the worker for ",
                   std::chrono::duration_cast<std::chrono::seconds>(silent).count(), " s (timeout ",
                   timeout.count() / 1000.0, " s)");
  spdlog::warn("job {}: {}; killing attempt {}", id, runtime.kill_reason, runtime.attempt);
  signal_process_tree(runtime.pid, SIGKILL);
}

void JobManager::start_queued_locked() {
  int free_slots = config_.slots - slots_in_use_locked();
  auto active = store_->list_active();
  if (!active.ok()) return;
  for (const auto& record : *active) {
    if (record.state != accum::v1::QUEUED) continue;
    // More ranks than this accumd has at all (it was restarted with fewer --slots since the
    // submit): it waits for an accumd with enough, and does not hold up the queue.
    if (record.world_size > config_.slots) continue;
    if (record.world_size > free_slots) break;  // strict FIFO: no overtaking
    auto it = runtimes_.find(record.id);
    if (it == runtimes_.end()) continue;
    free_slots -= record.world_size;
    start_attempt_locked(record, it->second);
  }
}

void JobManager::start_attempt_locked(const JobRecord& record, Runtime& runtime) {
  const int attempt = record.attempt + 1;
  remove_partial_checkpoints(record.spec.checkpoint().dir());
  const int64_t resume_step = latest_step(record);
  const std::string resume_from = attempt_resume_from(record.spec);
  std::string from;
  if (resume_from != "latest") {
    from = absl::StrCat(", starting from checkpoint ", resume_from);
  } else if (resume_step > 0) {
    from = absl::StrCat(", resuming from step ", resume_step);
  }
  // The attempt number is durable before anything is spawned: an accumd that dies after
  // the spawn finds "attempt N, no pid" in the store, kills what N left running and
  // launches N+1 (reconcile), instead of a second N beside the first. A refused write
  // spawns nothing; the supervisor tries again on a later tick.
  TransitionUpdate update;
  update.attempt = attempt;
  if (auto status =
          transition_locked(record.id, accum::v1::STARTING, "launch",
                            absl::StrCat("attempt ", attempt, " on ", record.world_size,
                                         record.world_size == 1 ? " rank" : " ranks", from),
                            update);
      !status.ok()) {
    spdlog::error("job {}: attempt {} not launched: {}", record.id, attempt,
                  std::string(status.message()));
    return;
  }
  runtime.attempt = attempt;  // from now on, hellos of earlier attempts are refused
  if (resumes_from_path(record.spec)) {
    // spec.json is what this attempt runs: the user's checkpoint until the job has its own.
    accum::v1::JobSpec spec = record.spec;
    spec.mutable_checkpoint()->set_resume_from(resume_from);
    if (auto status = write_job_spec(record.job_dir, spec); !status.ok()) {
      settle_locked(record.id, runtime,
                    {accum::v1::FAILED, "launch_failed",
                     absl::StrCat("attempt ", attempt, " failed to launch: ", status.message())});
      return;
    }
  }
  LaunchInfo info;
  info.id = record.id;
  info.job_dir = record.job_dir;
  info.world_size = record.world_size;
  info.attempt = attempt;
  info.launch = record.spec.launch();
  info.link_key = new_link_key();
  if (auto status = write_link_key(record.job_dir, attempt, info.link_key); !status.ok()) {
    // Launched all the same: only an accumd restarted during this attempt needs the file,
    // and it then lets the attempt's hello in unchecked.
    spdlog::warn("job {}: {}", record.id, std::string(status.message()));
  }
  runtime.link_key = info.link_key;
  auto pid = launch(config_.launcher, info);
  if (!pid.ok()) {
    // Through settle_locked, like every other end of a job: a FAILED the store refuses (a
    // full disk) is kept and retried each tick, and nothing relaunches the job meanwhile
    // (tick() only retries it; the queue starts QUEUED jobs only). Dropped, it would leave
    // the job STARTING with no process, holding its slots until a cancel or a restart.
    settle_locked(
        record.id, runtime,
        {accum::v1::FAILED, "launch_failed",
         absl::StrCat("attempt ", attempt, " failed to launch: ", pid.status().message())});
    return;
  }
  if (exit_after_spawn_for_test()) _exit(kExitAfterSpawnCode);
  runtime.pid = *pid;
  runtime.start_ticks = process_start_ticks(*pid).value_or(0);
  runtime.is_child = true;
  runtime.hello_seen = false;
  runtime.last_heard = Clock::now();
  runtime.kill_reason.clear();
  runtime.link.reset();
  runtime.link_session = 0;
  runtime.catch_up_through = 0;  // a new attempt's steps are new, even where they repeat
  if (auto status = store_->set_process(record.id, *pid, runtime.start_ticks, attempt);
      !status.ok()) {
    // Supervised all the same (waitpid); only a restarted accumd could not re-attach, and
    // it kills the attempt's processes by their tag and launches the next attempt.
    spdlog::error("job {}: attempt {} (pid {}) not recorded: {}", record.id, attempt, *pid,
                  std::string(status.message()));
  }
  spdlog::info("job {}: attempt {} launched, pid {}", record.id, attempt, *pid);
}

void JobManager::handle_exit_locked(const JobRecord& record, Runtime& runtime, int wait_status,
                                    bool known) {
  // A launcher that accumd re-attached to (it is not accumd's child) and then killed with
  // SIGKILL leaves no exit code: the signal ends its wrapper before the wrapper can write it.
  // Its end is known all the same, because accumd sent that signal itself (a force cancel,
  // also one the previous accumd recorded and this one finished, or a graceful cancel's last
  // step), to the whole tree while the launcher still ran.
  const bool killed_after_restart = !known && !runtime.is_child && runtime.cancel_escalation == 2;
  const std::string how = known ? describe_wait_status(wait_status)
                          : killed_after_restart
                              ? absl::StrCat("signal ", SIGKILL, " (", strsignal(SIGKILL),
                                             "), sent by accumd after it restarted")
                              : "an unknown status (no exit code was left: its launcher was "
                                "killed, or it ended while accumd was down)";
  const bool clean_exit = known && WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0;
  const int attempt = runtime.attempt;
  spdlog::info("job {}: attempt {} (pid {}) ended with {}", record.id, attempt, runtime.pid, how);
  runtime.pid = 0;
  runtime.link.reset();
  runtime.link_session = 0;
  runtime.hello_seen = false;
  (void)store_->set_process(record.id, 0, 0, attempt);
  // The launcher is gone, but a rank it started may not be (a launcher killed on its own
  // leaves its worker to init): it would train on beside the next attempt, in the same
  // folders, or after a cancel. It goes now, before the checkpoints are counted.
  kill_stray_processes(record);
  const int64_t checkpoint_step = latest_step(record);
  if (checkpoint_step > 0) (void)store_->set_latest_checkpoint(record.id, checkpoint_step);
  // An attempt that ended while accumd was away (or re-attached to) sent its last steps
  // to nobody: the metrics file has them, and the job's final progress comes from there.
  if (!runtime.is_child) seed_history_locked(record, runtime);

  const int64_t max_steps = record.spec.max_steps();
  const bool finished = checkpoint_step >= max_steps;
  // However the workers ended after it (below), a complete checkpoint at max_steps is the end
  // of training.
  const std::string ended_after =
      clean_exit ? "" : absl::StrCat(" (after it, the workers ended with ", how, ")");
  if (runtime.state == accum::v1::CANCELLING && finished) {
    // The cancel came as the job ended: it trained to max_steps and checkpointed it.
    settle_locked(record.id, runtime,
                  {accum::v1::SUCCEEDED, "worker_exit",
                   absl::StrCat("finished (a cancel arrived as it ended); latest checkpoint step ",
                                checkpoint_step, ended_after)});
    return;
  }
  if (runtime.state == accum::v1::CANCELLING) {
    if (runtime.force) remove_partial_checkpoints(record.spec.checkpoint().dir());
    const std::string message =
        clean_exit ? absl::StrCat("stopped after a final checkpoint at step ", checkpoint_step)
                   : absl::StrCat(runtime.force ? "killed" : "stopped", " (workers ended with ",
                                  how, "); latest checkpoint step ", checkpoint_step);
    settle_locked(record.id, runtime,
                  {accum::v1::CANCELLED, runtime.force ? "force_cancel" : "cancel", message});
    return;
  }
  // The worker checkpoints at max_steps, so a clean exit without that checkpoint stopped
  // early: a SIGTERM from outside accumd (an administrator, a node shutting down). The job
  // is not done: it restarts from that stop's checkpoint, like any other interruption.
  // A complete checkpoint at max_steps is the end of training, however the workers ended
  // after it: a rank that fails in its teardown (MPI_Finalize, NCCL's), or an exit accumd
  // could not learn (its launcher ended while accumd was down). A restart would only find
  // nothing to train, spending a restart, or, with none left, fail a job that trained to
  // the end.
  if (runtime.kill_reason.empty() && finished) {
    settle_locked(
        record.id, runtime,
        {accum::v1::SUCCEEDED, "worker_exit",
         absl::StrCat("finished; latest checkpoint step ", checkpoint_step, ended_after)});
    return;
  }
  const FailureSummary summary = summarize_failure(record.job_dir, attempt, 5);
  std::string what =
      !runtime.kill_reason.empty() ? runtime.kill_reason
      : clean_exit
          ? absl::StrCat("the worker exited 0 at checkpoint step ", checkpoint_step, " of ",
                         max_steps, " without being asked to stop (a SIGTERM from outside accumd?)")
          : absl::StrCat(summary.rank >= 0 ? absl::StrCat("rank ", summary.rank, " ")
                                           : std::string("the worker "),
                         "ended with ", how);
  const std::string tail = summary.last_lines.empty() ? "" : "\n" + summary.last_lines;
  // A rerun reads the same input and fails the same way, so such an exit fails the
  // job at once instead of spending its restarts. mpirun exits with the code of the
  // rank that ended the job, so this holds for jobs of several ranks too.
  const bool input_error = known && runtime.kill_reason.empty() && WIFEXITED(wait_status) &&
                           WEXITSTATUS(wait_status) == worker::kExitBadInput;
  if (input_error) {
    const std::string error =
        summary.last_error.empty() ? "" : absl::StrCat(": ", summary.last_error);
    settle_locked(
        record.id, runtime,
        {accum::v1::FAILED, "bad_input",
         absl::StrCat(
             "attempt ", attempt, ": ", what,
             " (bad input: the spec, a data file or checkpoint, or training that diverged)", error,
             "; not restarted: a rerun would fail the same way", tail)});
    return;
  }
  const int allowed = max_restarts(record);
  if (record.restarts < allowed) {
    const int restarts = record.restarts + 1;
    const auto backoff = restart_backoff(config_.restart_backoff, restarts);
    runtime.restart_at = Clock::now() + backoff;
    const int64_t restart_due_ms = now_unix_ms() + backoff.count();
    const std::string message = absl::StrCat("attempt ", attempt, ": ", what, "; restart ",
                                             restarts, " of ", allowed, " from checkpoint step ",
                                             checkpoint_step, " in ", backoff.count(), " ms", tail);
    // Already waiting. Not expected: reconcile leaves a RESTARTING job's handled exit alone.
    if (runtime.state == accum::v1::RESTARTING) {
      (void)store_->set_restarts(record.id, restarts);
      return;
    }
    settle_locked(record.id, runtime,
                  {accum::v1::RESTARTING, "worker_failed", message, restarts, restart_due_ms});
    return;
  }
  const std::string not_restarted =
      allowed == 0 ? std::string("not restarted: max_restarts is 0")
                   : absl::StrCat("no restarts left (", record.restarts, " of ", allowed, " used)");
  settle_locked(record.id, runtime,
                {accum::v1::FAILED, "worker_failed",
                 absl::StrCat("attempt ", attempt, ": ", what, "; ", not_restarted, tail)});
}

void JobManager::settle_locked(const std::string& id, Runtime& runtime, Outcome outcome) {
  const int failures = runtime.record_failures;
  // The restart count and the RESTARTING state go in one transaction: written apart, a
  // crash between them would spend a restart twice (or not at all).
  TransitionUpdate update;
  update.restarts = outcome.restarts;
  update.restart_due_ms = outcome.restart_due_ms;
  runtime.unrecorded.reset();  // set again below if the store refuses
  runtime.record_failures = 0;
  const absl::Status status =
      transition_locked(id, outcome.to, outcome.reason, outcome.message, update);
  if (status.ok()) {
    // Success may have erased `runtime` (a terminal state): it is not touched again then.
    if (failures > 0) {
      spdlog::info("job {}: {} recorded after {} refused tries", id, state_name(outcome.to),
                   failures);
    }
    return;
  }
  if (status.code() == absl::StatusCode::kFailedPrecondition) {
    // The state machine refuses it (the job moved on meanwhile): retrying cannot help.
    spdlog::error("job {}: {} not recorded: {}", id, state_name(outcome.to),
                  std::string(status.message()));
    return;
  }
  // Logged on the first refusal and then about once a minute (a tick is 100 ms).
  if (failures % 600 == 0) {
    spdlog::error("job {}: the job store refused its new state {} ({}); retrying every {} ms", id,
                  state_name(outcome.to), std::string(status.message()), kTick.count());
  }
  runtime.record_failures = failures + 1;
  runtime.unrecorded = std::move(outcome);
}

absl::Status JobManager::settle_unrecorded_end_locked(const std::string& id,
                                                      absl::string_view then) {
  auto it = runtimes_.find(id);
  if (it == runtimes_.end() || !it->second.unrecorded) return absl::OkStatus();
  settle_locked(id, it->second, *it->second.unrecorded);
  it = runtimes_.find(id);
  if (it == runtimes_.end() || !it->second.unrecorded || !is_terminal(it->second.unrecorded->to)) {
    return absl::OkStatus();
  }
  // The store still says the job is active (STARTING, for a launch that failed): naming that
  // state would contradict GetJob, which shows the end, so the refusal names the end too.
  const Outcome& outcome = *it->second.unrecorded;
  return absl::FailedPreconditionError(absl::StrCat(
      "job ", id, " already ended (", state_name(outcome.to), ": ", valid_utf8(outcome.message),
      "; not yet in the job store, which refused the write; accumd retries until it "
      "takes it)",
      then));
}

void JobManager::check_cancel_locked(const JobRecord& record, Runtime& runtime,
                                     Clock::time_point now) {
  if (now - runtime.cancel_at < config_.stop_grace || runtime.cancel_escalation >= 2) return;
  runtime.cancel_at = now;
  if (runtime.cancel_escalation == 0) {
    spdlog::warn("job {}: no exit {} ms after STOP; sending SIGTERM", record.id,
                 config_.stop_grace.count());
    signal_process_leaves(runtime.pid, SIGTERM);
    runtime.cancel_escalation = 1;
  } else {
    spdlog::warn("job {}: still running after SIGTERM; sending SIGKILL", record.id);
    signal_process_tree(runtime.pid, SIGKILL);
    runtime.cancel_escalation = 2;
  }
}

absl::Status JobManager::reconcile() {
  std::lock_guard lock(mutex_);
  auto active = store_->list_active();
  if (!active.ok()) return active.status();
  for (const auto& record : *active) {
    Runtime& runtime = runtimes_[record.id];
    runtime.state = record.state;
    runtime.world_size = record.world_size;
    runtime.attempt = record.attempt;
    runtime.force = record.force_cancel;
    if (record.state == accum::v1::QUEUED) continue;
    const pid_t pid = static_cast<pid_t>(record.launcher_pid);
    if (pid != 0 && process_alive(pid, record.launcher_start_ticks)) {
      runtime.pid = pid;
      runtime.start_ticks = record.launcher_start_ticks;
      runtime.is_child = false;
      runtime.last_heard = Clock::now();
      runtime.cancel_at = Clock::now();
      runtime.link_key = read_link_key(record.job_dir, record.attempt);
      seed_history_locked(record, runtime);
      spdlog::info("job {}: re-attached to attempt {} (pid {}), {}; {} steps of history read back",
                   record.id, record.attempt, pid, state_name(record.state),
                   runtime.history.size());
      if (record.state == accum::v1::CANCELLING && runtime.force) {
        // The previous accumd recorded a force cancel and may have died before its SIGKILL.
        spdlog::warn("job {}: finishing its force cancel: SIGKILL", record.id);
        signal_process_tree(pid, SIGKILL);
        runtime.cancel_escalation = 2;
      }
      continue;
    }
    // Not re-attached, so anything of this job still running is a stray: ranks that
    // outlived their launcher, or a whole attempt spawned just before the previous accumd
    // died (its pid never reached the store). It would train beside the next attempt, in
    // the same folders: it goes first.
    const size_t strays = kill_stray_processes(record);
    // RESTARTING is recorded only once its attempt's exit was handled (its restart counted):
    // a launcher pid still in the record (the write that clears it was refused, a full disk)
    // is that old exit's, and handling it again would count a second restart for it.
    if (pid != 0 && record.state != accum::v1::RESTARTING) {
      runtime.pid = pid;
      const auto code =
          read_exit_code_file(attempt_log_dir(record.job_dir, record.attempt) + "/exit_code");
      handle_exit_locked(record, runtime, code ? (*code << 8) : 0, code.has_value());
      continue;
    }
    // No process recorded: accumd died during a launch (the attempt number is written
    // before the spawn), or before its first.
    if (record.state == accum::v1::CANCELLING) {
      // A cancel records CANCELLING only while a process runs. Either its exit was handled up
      // to recording CANCELLED (a full disk refused it, or accumd died first), or its pid never
      // reached the store and what ran of it was killed just above. It ends as the cancel would
      // have ended it, with the same reason, forced or not; a force cancel's cleanup may not
      // have run, so it runs now.
      if (runtime.force) remove_partial_checkpoints(record.spec.checkpoint().dir());
      const std::string found =
          strays == 0 ? std::string("no worker was running when accumd restarted")
                      : absl::StrCat("accumd restarted and killed ", strays,
                                     " process(es) of the job that it had no record of");
      settle_locked(record.id, runtime,
                    {accum::v1::CANCELLED, runtime.force ? "force_cancel" : "cancel",
                     absl::StrCat(found, "; latest checkpoint step ", latest_step(record))});
    } else if (record.state == accum::v1::STARTING || record.state == accum::v1::RUNNING) {
      runtime.restart_at = Clock::now();
      settle_locked(record.id, runtime,
                    {accum::v1::RESTARTING, "reconcile",
                     absl::StrCat("accumd restarted during the launch of attempt ", record.attempt,
                                  "; its processes, if any, were killed"),
                     -1, now_unix_ms()});
    } else {
      // RESTARTING: what is left of its backoff (at once for a store from before due times).
      const auto remaining = backoff_remaining(record.restart_due_ms, now_unix_ms());
      runtime.restart_at = Clock::now() + remaining;
      spdlog::info("job {}: restarting in {} ms (attempt {} is next)", record.id, remaining.count(),
                   record.attempt + 1);
    }
  }
  return absl::OkStatus();
}

}  // namespace accum::control
