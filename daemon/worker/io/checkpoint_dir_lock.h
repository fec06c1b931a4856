// io/checkpoint_dir_lock.h — one training run per checkpoint folder.
//
// Two runs that write into one checkpoint.dir (a job launched twice, two specs sharing a
// folder) replace each other's step directories and `latest` without a word, and the one
// started second resumes from the first's checkpoints while the first is still training.
// Rank 0 of a run holds an exclusive flock(2) on <dir>/.lock for as long as it trains;
// the kernel drops it when the process ends however it ends, so a crash leaves no stale
// lock. On NFS, Linux maps flock to the server's byte-range locks, which every client sees.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace accum::io {

// Thread safety: none needed; the lock is held until destruction.
class CheckpointDirLock {
 public:
  // Takes the lock on `dir`/.lock, creating the file (REQUIRES: `dir` exists). Another
  // run holding it: UNAVAILABLE naming the folder and the holder (pid and host, as the
  // holder wrote them into the file). A file system that takes no locks (ENOLCK,
  // EOPNOTSUPP: some NFS mounts, Lustre without flock): UNIMPLEMENTED, for the caller to
  // warn and go on unlocked. Any other failure: INTERNAL naming the file.
  static absl::StatusOr<std::unique_ptr<CheckpointDirLock>> acquire(const std::string& dir);
  ~CheckpointDirLock();
  CheckpointDirLock(const CheckpointDirLock&) = delete;
  CheckpointDirLock& operator=(const CheckpointDirLock&) = delete;

 private:
  explicit CheckpointDirLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace accum::io
