// control/job_manager.h — the daemon's domain logic: submit, watch, cancel,
// checkpoint, and the supervisor that launches, restarts and reconciles jobs.
//
// Knows nothing of gRPC (STYLE.md, route_guide): the Control and WorkerLink
// services translate protos and Status codes and call in here. Durable state is
// in the JobStore; what only matters while a process runs (its pid, its link,
// heartbeats, watchers' metrics history) is in memory and rebuilt by
// reconcile() when accumd restarts.
//
// Implementation, by what it does: job_manager.cpp (submit, cancel, checkpoint, continue),
// job_queries.cpp (status, list, metrics snapshot, checkpoints, watch), job_supervision.cpp
// (the supervisor loop: launches, exits, restarts, queue, heartbeats, reconcile),
// job_link.cpp (the workers' hello and events) and job_removal.cpp (delete).
//
// Thread safety: every public method is thread-safe. One mutex guards the
// runtime table; the supervisor thread ticks every 100 ms.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/control/event_hub.h"
#include "daemon/control/job_store.h"
#include "daemon/control/launcher.h"
#include "daemon/control/prometheus.h"
#include "proto/accum.pb.h"

namespace accum::control {

// Metrics kept in memory per job for watchers (the newest ones).
inline constexpr size_t kMaxHistory = 100000;
// INVALID_ARGUMENT for an empty job id or one over kMaxIdLength bytes.
inline constexpr size_t kMaxIdLength = 64;
absl::Status check_id(const std::string& id);

using Clock = std::chrono::steady_clock;

struct ManagerConfig {
  std::string state_dir;
  int slots = 1;  // CPU ranks or GPUs this host offers
  LauncherConfig launcher;
  std::chrono::milliseconds heartbeat_timeout{60000};  // after the worker's hello
  // From a launch (or a re-attach) to the worker's hello; a worker that never connects
  // is killed and restarted. Generous: rank 0 says hello after loading data and weights.
  std::chrono::milliseconds hello_timeout{300000};
  std::chrono::milliseconds restart_backoff{1000};     // doubled per restart, capped at 60 s
  std::chrono::milliseconds stop_grace{60000};         // STOP -> SIGTERM -> SIGKILL
  int default_max_restarts = 3;                        // for a spec that leaves max_restarts unset
  int max_queued = 1000;                               // more waiting jobs: RESOURCE_EXHAUSTED
};

// Where the manager sends commands to a connected rank 0. send() must not block.
class CommandSink {
 public:
  virtual ~CommandSink() = default;
  virtual void send(const accum::v1::WorkerCommand& command) = 0;
};

// What delete_job() removed.
struct DeletedJob {
  std::string job_dir;
  int64_t bytes_freed = 0;  // the sizes of the files that were in it
};

struct WatchStart {
  std::shared_ptr<JobSubscription> subscription;
  std::vector<accum::v1::JobEvent> backlog;  // current status, then metrics so far
};

class JobManager {
 public:
  // Opens <state_dir>/accumd.db, creates <state_dir>/jobs and reconciles jobs
  // left active by a previous accumd. Call start() to begin supervising.
  static absl::StatusOr<std::unique_ptr<JobManager>> create(ManagerConfig config);
  ~JobManager();
  JobManager(const JobManager&) = delete;
  JobManager& operator=(const JobManager&) = delete;

  void start();     // starts the supervisor thread
  void shutdown();  // stops supervising; running workers keep running (re-attach later)

  // Validates (INVALID_ARGUMENT naming the field), rewrites paths into the job
  // dir and queues the job. spec_dir: absolute folder relative paths resolve against.
  // `note`, if given, goes into the job's first transition ("submitted: <note>; waiting ...").
  absl::StatusOr<accum::v1::JobStatus> submit(accum::v1::JobSpec spec, const std::string& spec_dir,
                                              const std::string& note = "");
  // Submits a new job that continues the ended job `id` from its latest complete checkpoint,
  // with max_steps (0: the job's own, which must lie beyond the checkpoint).
  // FAILED_PRECONDITION while the job is active or when it has no checkpoint;
  // INVALID_ARGUMENT for a max_steps that leaves nothing to train.
  absl::StatusOr<accum::v1::JobStatus> continue_job(const std::string& id, int64_t max_steps);
  absl::StatusOr<accum::v1::JobStatus> get(const std::string& id);
  // Page of jobs in submission order; returns the next page token ("" at the end).
  absl::StatusOr<std::pair<std::vector<accum::v1::JobStatus>, std::string>> list(
      const std::vector<accum::v1::JobState>& states, int page_size, const std::string& page_token);
  // Graceful: STOP through the link (checkpoint, exit 0), SIGTERM after
  // stop_grace, SIGKILL after twice that. Force: SIGKILL now.
  absl::StatusOr<accum::v1::JobStatus> cancel(const std::string& id, bool force);
  // Asks rank 0 for a checkpoint at the next optimizer-step boundary and blocks
  // until it is complete. ABORTED when the attempt the request went to ends first
  // (its request dies with it), DEADLINE_EXCEEDED at `deadline`, CANCELLED once
  // `client_gone` (polled; may be empty) returns true.
  absl::StatusOr<accum::v1::CheckpointInfo> checkpoint(
      const std::string& id, Clock::time_point deadline,
      const std::function<bool()>& client_gone = {});
  absl::StatusOr<std::vector<accum::v1::CheckpointInfo>> checkpoints(const std::string& id);
  // Removes an ended job's record and folder (job_removal.cpp). FAILED_PRECONDITION while
  // the job is active, while an active job's next attempt would start from one of its
  // checkpoints, or when its folder is not <state_dir>/jobs/<id>.
  absl::StatusOr<DeletedJob> delete_job(const std::string& id);
  absl::StatusOr<WatchStart> watch(const std::string& id);
  void unwatch(const std::string& id, const std::shared_ptr<JobSubscription>& subscription);
  // For StreamLogs: the job's folder (NOT_FOUND for unknown ids).
  absl::StatusOr<JobRecord> record(const std::string& id);

  // WorkerLink. connected() returns a session id that later calls carry, so a
  // stale connection from an earlier attempt cannot speak for the new one.
  absl::StatusOr<uint64_t> worker_connected(const accum::v1::WorkerHello& hello,
                                            std::shared_ptr<CommandSink> sink);
  void worker_event(const std::string& job_id, uint64_t session,
                    const accum::v1::WorkerEvent& event);
  void worker_disconnected(const std::string& job_id, uint64_t session);

  // Active jobs' gauges (freshest metrics), jobs by state and slot use, for
  // the Prometheus endpoint (prometheus.h). The rpcs and uptime are the caller's.
  absl::StatusOr<DaemonSnapshot> metrics_snapshot();

  const ManagerConfig& config() const { return config_; }
  // The address workers dial back (known once the server is bound). REQUIRES: before start().
  void set_control_addr(const std::string& addr) { config_.launcher.control_addr = addr; }

 private:
  // How a worker's exit, or a launch that failed, ends up in the store: a transition, and
  // for a restart the restart count first. Kept in the Runtime while the store refuses the
  // write (a full disk), and retried every tick until it lands: the exit status cannot be
  // read twice, and a failed launch must not be launched again meanwhile.
  struct Outcome {
    accum::v1::JobState to = accum::v1::QUEUED;
    std::string reason, message;
    int restarts = -1;            // >= 0: store this restart count with the transition
    int64_t restart_due_ms = -1;  // >= 0: and when the restart is due (wall clock)
  };
  struct Runtime {
    accum::v1::JobState state = accum::v1::QUEUED;  // mirrors the store
    int world_size = 1;
    pid_t pid = 0;
    int64_t start_ticks = 0;
    bool is_child = false;  // launched by this accumd (waitpid) or re-attached (poll /proc)
    int attempt = 0;
    std::shared_ptr<CommandSink> link;
    uint64_t link_session = 0;
    std::string link_key;   // the attempt's ACCUM_LINK_KEY; "" accepts any hello (older attempts)
    int64_t max_steps = 0;  // of the spec, for checking the link's events
    std::string checkpoint_dir;  // likewise
    Clock::time_point last_heard{};
    bool hello_seen = false;
    Clock::time_point restart_at{};  // in the store as the wall-clock restart_due_ms
    Clock::time_point cancel_at{};
    bool force = false;         // in the store as force_cancel
    int cancel_escalation = 0;  // 0: STOP sent, 1: SIGTERM sent, 2: SIGKILL sent
    std::string kill_reason;    // why the supervisor killed it (heartbeat timeout)
    std::deque<accum::v1::StepMetrics> history;  // the newest kMaxHistory steps
    // After accumd re-attached to a running worker, its history was read back from the
    // metrics file; the worker's link then re-sends the steps it queued while accumd was
    // away, and those up to this step are already there (0: no such catch-up).
    int64_t catch_up_through = 0;
    Clock::time_point last_persisted{};
    std::map<uint64_t, accum::v1::CheckpointInfo> checkpoints_done;  // by request id
    std::optional<Outcome> unrecorded;  // an outcome the store refused (settle_locked)
    int record_failures = 0;            // tries since then
  };

  explicit JobManager(ManagerConfig config, std::unique_ptr<JobStore> store);
  absl::StatusOr<accum::v1::JobStatus> status_of(const JobRecord& record);
  // What the runtime knows beyond the store: the newest step, and a state the store has
  // refused so far. REQUIRES: mutex_ held.
  void overlay_runtime_locked(accum::v1::JobStatus* status) const;
  // The state GetJob shows for `record`: an outcome the store refused so far (a full disk)
  // over the stored state. A refusal that names the job's state names this one.
  accum::v1::JobState shown_state_locked(const JobRecord& record) const;
  // Records a transition (with `update`, in one transaction) and tells watchers.
  // REQUIRES: mutex_ held.
  absl::Status transition_locked(const std::string& id, accum::v1::JobState to,
                                 const std::string& reason, const std::string& message,
                                 const TransitionUpdate& update = {});
  absl::Status reconcile();
  // Finishes or undoes the deletes an earlier accumd left half done (job_removal.cpp).
  void recover_deletes();
  // Reads a re-attached job's history back from its metrics file. REQUIRES: mutex_ held.
  void seed_history_locked(const JobRecord& record, Runtime& runtime);

  // job_supervision.cpp
  void supervise_loop();
  void tick();
  void start_attempt_locked(const JobRecord& record, Runtime& runtime);
  void handle_exit_locked(const JobRecord& record, Runtime& runtime, int wait_status, bool known);
  // Records `outcome`; if the store refuses, keeps it in runtime.unrecorded for the next tick.
  // On success a terminal transition erases the Runtime. REQUIRES: mutex_ held.
  void settle_locked(const std::string& id, Runtime& runtime, Outcome outcome);
  // For an RPC that acts on a job by its stored state: first tries again to record an outcome
  // the store refused so far (settle_locked), so that the store is not behind the job. OK when
  // nothing is left unrecorded, or what is left does not end the job; FAILED_PRECONDITION when
  // the store still refuses the job's end, saying how it ended, followed by `then` (what the
  // caller can do once the store takes writes). REQUIRES: mutex_ held.
  absl::Status settle_unrecorded_end_locked(const std::string& id, absl::string_view then);
  void check_cancel_locked(const JobRecord& record, Runtime& runtime, Clock::time_point now);
  // Kills an attempt whose worker has been silent too long: no heartbeat within
  // heartbeat_timeout after its hello, or no hello within hello_timeout. REQUIRES: mutex_ held.
  void check_silence_locked(Runtime& runtime, const std::string& id, Clock::time_point now);
  void start_queued_locked();
  int slots_in_use_locked();
  // The restarts a job may spend: its spec's max_restarts (0: none).
  int max_restarts(const JobRecord& record) const;

  ManagerConfig config_;
  std::unique_ptr<JobStore> store_;
  EventHub hub_;
  std::mutex mutex_;
  std::condition_variable checkpoint_done_;
  std::map<std::string, Runtime> runtimes_;  // GUARDED_BY(mutex_): every active job
  uint64_t next_session_ = 1;                // GUARDED_BY(mutex_)
  uint64_t next_request_ = 1;                // GUARDED_BY(mutex_)
  std::atomic<bool> stopping_{false};
  std::thread supervisor_;
};

}  // namespace accum::control
