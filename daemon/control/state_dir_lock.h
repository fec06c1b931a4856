// control/state_dir_lock.h — one accumd per state dir. Two daemons on one dir would
// both reconcile and supervise the same jobs (double launches, conflicting restarts),
// so accumd holds an exclusive flock on <state-dir>/accumd.lock for its whole life.
//
// The lock belongs to the open file, which is close-on-exec: workers accumd starts
// (and that outlive it by design) do not inherit it, so a restarted accumd can take it.
// The kernel drops it when the process ends, however it ends.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace accum::control {

// Holds the lock while alive. Move-only; not thread-safe (own it from main).
class StateDirLock {
 public:
  // Creates `state_dir` if needed and takes the lock without waiting; writes this
  // process's pid into the lock file. FAILED_PRECONDITION naming the lock file (and
  // the holder's pid, when it wrote one) when another process holds it; UNAVAILABLE
  // when the file cannot be created.
  static absl::StatusOr<StateDirLock> acquire(const std::string& state_dir);

  StateDirLock(StateDirLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  StateDirLock& operator=(StateDirLock&&) = delete;
  StateDirLock(const StateDirLock&) = delete;
  StateDirLock& operator=(const StateDirLock&) = delete;
  ~StateDirLock();

 private:
  explicit StateDirLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace accum::control
