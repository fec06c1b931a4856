// comm/mpi_progress.cpp — see mpi_progress.h. Every MPI call here holds an
// MpiCallGuard (a no-op under MPI_THREAD_MULTIPLE).
#include "daemon/worker/comm/mpi_progress.h"

#include <exception>

#include "daemon/worker/comm/mpi_runtime.h"
#include "daemon/worker/comm/work_info.h"

namespace accum::comm {
namespace {

std::string mpi_error_text(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(rc, text, &length);
  return std::string(text, length);
}

}  // namespace

MpiProgressEngine::MpiProgressEngine(bool use_thread) : use_thread_(use_thread) {
  if (use_thread_) thread_ = std::thread([this] { run(); });
}

MpiProgressEngine::~MpiProgressEngine() { shutdown(std::chrono::milliseconds(0)); }

void MpiProgressEngine::submit(MpiOperation op) {
  {
    std::lock_guard<std::mutex> lock(queue_mutex_);
    if (stopping_) {
      complete(op, "the communicator was destroyed");
      return;
    }
    queued_.push_back(std::move(op));
  }
  if (use_thread_) {
    wake_.notify_one();
  } else {
    progress_once();  // start it now: the caller wants overlap with what follows
  }
}

void MpiProgressEngine::poll() {
  if (!use_thread_) progress_once();
}

void MpiProgressEngine::complete(const MpiOperation& op, const std::string& error) {
  {
    std::lock_guard<std::mutex> lock(op.state->mutex);
    op.state->done = true;
    op.state->error = error;
  }
  op.state->done_cv.notify_all();
}

bool MpiProgressEngine::progress_once() {
  std::lock_guard<std::mutex> progress_lock(progress_mutex_);
  bool changed = false;
  std::deque<MpiOperation> to_start;
  {
    std::lock_guard<std::mutex> lock(queue_mutex_);
    to_start.swap(queued_);
  }
  for (MpiOperation& op : to_start) {
    InFlight entry;
    int rc;
    {
      MpiCallGuard guard;
      rc = op.start(&entry.request);
    }
    changed = true;
    if (rc != MPI_SUCCESS) {
      complete(op, "starting it failed: " + mpi_error_text(rc));
      continue;
    }
    entry.op = std::move(op);
    in_flight_.push_back(std::move(entry));
    in_flight_count_.fetch_add(1);
  }
  // Completion order does not matter to MPI; keep the vector ordered for fairness.
  for (size_t i = 0; i < in_flight_.size();) {
    int flag = 0;
    int rc;
    {
      MpiCallGuard guard;
      rc = MPI_Test(&in_flight_[i].request, &flag, MPI_STATUS_IGNORE);
    }
    if (rc != MPI_SUCCESS || flag) {
      std::string error;
      if (rc != MPI_SUCCESS) {
        error = "MPI_Test failed: " + mpi_error_text(rc);
      } else if (in_flight_[i].op.finish) {
        try {
          in_flight_[i].op.finish();
        } catch (const std::exception& e) {
          error = e.what();
        }
      }
      complete(in_flight_[i].op, error);
      in_flight_.erase(in_flight_.begin() + static_cast<std::ptrdiff_t>(i));
      in_flight_count_.fetch_sub(1);
      changed = true;
    } else {
      ++i;
    }
  }
  return changed;
}

void MpiProgressEngine::run() {
  int idle_rounds = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(queue_mutex_);
      if (in_flight_count_.load() == 0) {
        wake_.wait(lock, [this] { return stopping_ || !queued_.empty(); });
      }
      if (stopping_) return;  // shutdown() drains what is left from its own thread
    }
    if (progress_once()) {
      idle_rounds = 0;
    } else if (++idle_rounds < 64) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
}

bool MpiProgressEngine::shutdown(std::chrono::milliseconds drain) {
  {
    std::lock_guard<std::mutex> lock(queue_mutex_);
    if (stopping_) return !abandoned_.load();  // already shut down
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  // Let queued and in-flight operations finish (the caller's thread now drives them).
  const auto deadline = std::chrono::steady_clock::now() + drain;
  for (;;) {
    progress_once();
    std::lock_guard<std::mutex> progress_lock(progress_mutex_);
    if (in_flight_.empty()) return true;
    if (std::chrono::steady_clock::now() >= deadline) {
      comm_logger()->warn("MPI communicator destroyed with {} collective(s) still in flight",
                          in_flight_.size());
      for (InFlight& entry : in_flight_) complete(entry.op, "the communicator was destroyed");
      in_flight_.clear();
      in_flight_count_.store(0);
      abandoned_.store(true);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

}  // namespace accum::comm
