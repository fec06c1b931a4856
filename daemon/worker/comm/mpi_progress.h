// comm/mpi_progress.h — the MPI back end's progress engine: starts non-blocking
// collectives in submission order and drives them to completion with MPI_Test.
//
// Open MPI progresses a non-blocking collective only while some thread is inside an
// MPI call, so without help an MPI_Iallreduce issued during the backward would make
// no progress until the trainer waits for it (no overlap). The engine therefore owns
// a communication thread that starts queued operations and polls MPI_Test on the
// ones in flight (spinning briefly, then sleeping ~100 us, so that it does not starve
// compute on oversubscribed cores). When MPI grants less than MPI_THREAD_SERIALIZED
// no other thread may call MPI; then there is no thread and the caller drives
// progress through poll() from is_completed()/wait().
//
// Thread safety: submit() and poll() may be called from any thread.
#pragma once

#include <mpi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace accum::comm {

// Completion state of one operation, shared by the engine and the Work handle.
struct MpiWorkState {
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;  // GUARDED_BY(mutex)
  std::string error;  // GUARDED_BY(mutex); non-empty: the collective failed
};

struct MpiOperation {
  // Issues the non-blocking MPI call; returns its MPI error code.
  std::function<int(MPI_Request*)> start;
  // Host-side post-processing once the request completed (kAvg division, moving an
  // in-place reduce-scatter result); may be empty.
  std::function<void()> finish;
  std::shared_ptr<MpiWorkState> state;
};

class MpiProgressEngine {
 public:
  explicit MpiProgressEngine(bool use_thread);
  ~MpiProgressEngine();
  MpiProgressEngine(const MpiProgressEngine&) = delete;
  MpiProgressEngine& operator=(const MpiProgressEngine&) = delete;

  // Queues `op`; operations start in the order submitted.
  void submit(MpiOperation op);
  // Without a thread: starts queued operations and tests those in flight once.
  // With a thread: does nothing (the thread does it).
  void poll();
  bool threaded() const { return use_thread_; }
  // Stops the thread after letting operations in flight finish for up to `drain`;
  // the ones still unfinished fail with "communicator destroyed". Returns whether
  // none was abandoned (only then may their MPI communicator be freed).
  bool shutdown(std::chrono::milliseconds drain);

 private:
  struct InFlight {
    MPI_Request request = MPI_REQUEST_NULL;
    MpiOperation op;
  };
  void run();
  // Starts queued operations and tests those in flight; returns whether any
  // operation started or finished.
  bool progress_once();
  static void complete(const MpiOperation& op, const std::string& error);

  const bool use_thread_;
  std::mutex queue_mutex_;
  std::condition_variable wake_;
  std::deque<MpiOperation> queued_;         // GUARDED_BY(queue_mutex_)
  bool stopping_ = false;                   // GUARDED_BY(queue_mutex_)
  std::mutex progress_mutex_;               // one thread at a time in progress_once()
  std::vector<InFlight> in_flight_;         // GUARDED_BY(progress_mutex_)
  std::atomic<size_t> in_flight_count_{0};  // in_flight_.size(), readable without the lock
  std::atomic<bool> abandoned_{false};
  std::thread thread_;
};

}  // namespace accum::comm
