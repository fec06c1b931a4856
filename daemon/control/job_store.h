// control/job_store.h — durable job records in SQLite.
//
// One database file (WAL journal, synchronous=FULL: a transition acknowledged to
// a client survives kill -9 and power loss). Tables:
//   jobs(id, name, state, spec_json, spec_dir, job_dir, world_size, restarts,
//        attempt, message, created_ms, updated_ms, launcher_pid,
//        launcher_start_ticks, latest_checkpoint_step, last_metrics_json,
//        force_cancel, restart_due_ms)
//   transitions(job_id, seq, state, time_ms, reason, message)
// Every state change goes through transition(), which checks the state machine
// (job_state.h) and writes the new state and its history row in one transaction.
//
// Reads are served from a write-through cache of parsed records and transition
// lists (GetJob is the hot path: parsing spec JSON per call cost ~0.5 ms of CPU).
// This process is the database's only writer, and every write goes through
// insert(), transition() or update_columns(), which drop the job's entries
// after writing; the database stays the durable truth.
//
// Thread safety: all methods are safe to call concurrently (one internal mutex).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/accum.pb.h"

struct sqlite3;

namespace accum::control {

// What the store knows about a job (the runtime-only parts live in JobManager).
struct JobRecord {
  std::string id;
  std::string name;
  accum::v1::JobState state = accum::v1::QUEUED;
  accum::v1::JobSpec spec;  // validated, paths rewritten into job_dir
  std::string spec_dir;
  std::string job_dir;
  int world_size = 1;
  int restarts = 0;
  int attempt = 0;
  std::string message;
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  int64_t launcher_pid = 0;          // 0: no process
  int64_t launcher_start_ticks = 0;  // /proc/<pid>/stat starttime, guards against pid reuse
  int64_t latest_checkpoint_step = 0;
  accum::v1::StepMetrics last_metrics;
  // The job's cancel is a forced one (SIGKILL, partial checkpoints removed): an accumd
  // restarted before the workers' exit was handled finishes it as one.
  bool force_cancel = false;
  // When the RESTARTING job's next attempt is due (wall clock, ms since the epoch; 0: at
  // once). Meaningful only in RESTARTING.
  int64_t restart_due_ms = 0;
};

int64_t now_unix_ms();

// Columns that change in the same transaction as a state, so that a crash between two
// writes cannot leave the one without the other.
struct TransitionUpdate {
  // >= 0: the attempt about to be launched. Its process is not known yet, so the
  // launcher pid and start ticks are cleared with it: "attempt N, no pid" in a
  // STARTING/RUNNING/CANCELLING record means a launch that may have spawned processes.
  int attempt = -1;
  int restarts = -1;  // >= 0: the restarts spent (written with RESTARTING)
  int64_t restart_due_ms = -1;  // >= 0: when the next attempt is due (written with RESTARTING)
  bool force_cancel = false;    // true: the cancel is forced (written with CANCELLING)
};

class JobStore {
 public:
  // Opens (creating if needed) the database at `path`.
  static absl::StatusOr<std::unique_ptr<JobStore>> open(const std::string& path);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  // Allocates the next id ("job-000001", ...) without writing a record.
  absl::StatusOr<std::string> next_id();
  // Inserts a new job with an initial transition into record.state.
  absl::Status insert(const JobRecord& record, const std::string& reason);
  absl::StatusOr<JobRecord> get(const std::string& id);  // NOT_FOUND for unknown ids
  // Jobs in submission order after the job `after_id` ("" from the start; an unknown
  // id is INVALID_ARGUMENT), filtered by states (empty: all), at most `limit`.
  absl::StatusOr<std::vector<JobRecord>> list(const std::vector<accum::v1::JobState>& states,
                                              const std::string& after_id, int limit);
  // Jobs not in a terminal state (daemon start-up reconciliation, scheduling).
  absl::StatusOr<std::vector<JobRecord>> list_active();
  // How many jobs are in each state (states without jobs are absent).
  absl::StatusOr<std::map<accum::v1::JobState, int64_t>> count_by_state();

  // Moves a job to `to`; FAILED_PRECONDITION naming both states when the state
  // machine forbids it. The message also becomes the job's current message. `update`
  // is written in the same transaction (nothing of it when the move is refused).
  absl::Status transition(const std::string& id, accum::v1::JobState to, const std::string& reason,
                          const std::string& message, const TransitionUpdate& update = {});
  absl::StatusOr<std::vector<accum::v1::Transition>> transitions(const std::string& id);
  // Deletes a job's record and its transitions in one transaction; NOT_FOUND for an
  // unknown id. The id counter is not touched: ids are never handed out twice. The id
  // keeps its place in the submission order, so list() still takes it as after_id.
  absl::Status remove(const std::string& id);

  absl::Status set_process(const std::string& id, int64_t pid, int64_t start_ticks, int attempt);
  absl::Status set_restarts(const std::string& id, int restarts);
  // Marks the job's cancel as forced (a force cancel of a job already CANCELLING gracefully).
  absl::Status set_force_cancel(const std::string& id);
  absl::Status set_progress(const std::string& id, const accum::v1::StepMetrics& metrics);
  absl::Status set_latest_checkpoint(const std::string& id, int64_t step);

 private:
  explicit JobStore(sqlite3* db) : db_(db) {}
  absl::Status exec(const std::string& sql);
  // Brings a database of schema version `found_version` (older than this accumd's) to this
  // accumd's: adds the columns it lacks and records the version, in one transaction.
  absl::Status migrate(int64_t found_version);
  absl::Status update_columns(const std::string& id, const std::string& assignments,
                              const std::vector<std::string>& text_args,
                              const std::vector<int64_t>& int_args);

  void forget_locked(const std::string& id);  // drops the job's cached entries

  std::mutex mutex_;
  sqlite3* db_;                                              // GUARDED_BY(mutex_)
  std::unordered_map<std::string, JobRecord> record_cache_;  // GUARDED_BY(mutex_)
  std::unordered_map<std::string, std::vector<accum::v1::Transition>>
      transitions_cache_;  // GUARDED_BY(mutex_)
};

}  // namespace accum::control
