// comm/mpi_comm.cpp — the MPI back end (host buffers; Open MPI 4.1).
//
// Each collective is one non-blocking MPI call on a private duplicate of
// MPI_COMM_WORLD (so that collectives of the program or of another Communicator never
// match ours), started and progressed by the MpiProgressEngine. Work::wait() waits on
// the operation's completion with a deadline: a peer that died or never joins makes
// it throw CommError instead of blocking forever (MPI has no portable way to cancel a
// collective, so the request is left in flight and the caller must end the job).
//
// Thread levels: progress comes from the engine's thread when MPI grants at least
// MPI_THREAD_SERIALIZED (calls then serialized by MpiCallGuard below MULTIPLE), else
// from the caller's is_completed()/wait().
//
// kAvg is a sum followed by a division by the world size on the host, done by the
// progress engine before the Work completes.
#include <mpi.h>

#include <climits>
#include <cstdlib>
#include <cstring>

#include "daemon/worker/comm/backends.h"
#include "daemon/worker/comm/mpi_progress.h"
#include "daemon/worker/comm/mpi_runtime.h"
#include "daemon/worker/comm/work_info.h"

namespace accum::comm {
namespace {

class MpiWork final : public Work {
 public:
  MpiWork(std::shared_ptr<MpiWorkState> state, std::shared_ptr<MpiProgressEngine> engine,
          WorkInfo info)
      : state_(std::move(state)), engine_(std::move(engine)), info_(info) {}

  bool is_completed() override {
    engine_->poll();
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->done;
  }

  void wait(std::chrono::milliseconds timeout) override {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::unique_lock<std::mutex> lock(state_->mutex);
    if (engine_->threaded()) {
      state_->done_cv.wait_until(lock, deadline, [this] { return state_->done; });
    } else {
      while (!state_->done && std::chrono::steady_clock::now() < deadline) {
        lock.unlock();
        engine_->poll();
        std::this_thread::sleep_for(std::chrono::microseconds(50));
        lock.lock();
      }
    }
    if (!state_->done) throw CommError(timeout_message(info_, timeout));
    if (!state_->error.empty()) throw CommError(failure_message(info_, state_->error));
  }

 private:
  std::shared_ptr<MpiWorkState> state_;
  std::shared_ptr<MpiProgressEngine> engine_;
  WorkInfo info_;
};

// buf(count) /= divisor, for the floating dtypes (kAvg).
void divide_in_place(void* buf, size_t count, DataType dtype, int divisor) {
  if (dtype == DataType::kFloat32) {
    float* values = static_cast<float*>(buf);
    for (size_t i = 0; i < count; ++i) values[i] /= static_cast<float>(divisor);
  } else {
    double* values = static_cast<double*>(buf);
    for (size_t i = 0; i < count; ++i) values[i] /= static_cast<double>(divisor);
  }
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    const int level = ensure_mpi_initialized();
    MpiCallGuard guard;
    check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup(MPI_COMM_WORLD)");
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &world_size_);
    MPI_Comm node_comm;
    check_mpi(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node_comm),
              "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)");
    MPI_Comm_rank(node_comm, &local_rank_);
    MPI_Comm_free(&node_comm);
    // ACCUM_MPI_PROGRESS=caller forces the path taken under MPI_THREAD_FUNNELED or
    // lower (no communication thread; is_completed/wait drive progress), for tests.
    const char* progress = std::getenv("ACCUM_MPI_PROGRESS");
    const bool caller_progress = progress != nullptr && std::string(progress) == "caller";
    engine_ =
        std::make_shared<MpiProgressEngine>(level >= MPI_THREAD_SERIALIZED && !caller_progress);
  }

  ~MpiCommunicator() override {
    const bool drained = engine_->shutdown(std::chrono::milliseconds(2000));
    if (drained && mpi_is_running()) {
      MpiCallGuard guard;
      MPI_Comm_free(&comm_);
    }
  }

  const char* backend_name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  int local_rank() const override { return local_rank_; }

  std::unique_ptr<Work> all_reduce_async(void* buf, size_t count,
                                         const CollectiveOptions& opts) override {
    const WorkInfo info = make_work_info(*this, "all_reduce", count, opts.dtype);
    const int mpi_count = checked_count(info, count);
    check_op(info, opts);
    MpiOperation op;
    const MPI_Datatype type = mpi_datatype(opts.dtype);
    op.start = [=, this](MPI_Request* request) {
      return MPI_Iallreduce(MPI_IN_PLACE, buf, mpi_count, type, MPI_SUM, comm_, request);
    };
    if (opts.op == ReduceOp::kAvg) {
      op.finish = [=, this] { divide_in_place(buf, count, opts.dtype, world_size_); };
    }
    return submit(std::move(op), info);
  }

  std::unique_ptr<Work> reduce_scatter_async(const void* send, void* recv, size_t count,
                                             const CollectiveOptions& opts) override {
    const WorkInfo info = make_work_info(*this, "reduce_scatter", count, opts.dtype);
    const int mpi_count = checked_count(info, count);
    check_op(info, opts);
    const size_t bytes = count * dtype_size(opts.dtype);
    char* send_bytes = const_cast<char*>(static_cast<const char*>(send));
    char* own_slice = send_bytes + static_cast<size_t>(rank_) * bytes;
    const bool in_place = recv == own_slice;
    const MPI_Datatype type = mpi_datatype(opts.dtype);
    MpiOperation op;
    op.start = [=, this](MPI_Request* request) {
      // In place, MPI reads the whole of send and leaves this rank's result at its start.
      return in_place ? MPI_Ireduce_scatter_block(MPI_IN_PLACE, send_bytes, mpi_count, type,
                                                  MPI_SUM, comm_, request)
                      : MPI_Ireduce_scatter_block(send_bytes, recv, mpi_count, type, MPI_SUM, comm_,
                                                  request);
    };
    op.finish = [=, this] {
      if (in_place && rank_ != 0) std::memmove(own_slice, send_bytes, bytes);
      if (opts.op == ReduceOp::kAvg) divide_in_place(recv, count, opts.dtype, world_size_);
    };
    return submit(std::move(op), info);
  }

  std::unique_ptr<Work> all_gather_async(const void* send, void* recv, size_t count,
                                         DataType dtype) override {
    const WorkInfo info = make_work_info(*this, "all_gather", count, dtype);
    const int mpi_count = checked_count(info, count);
    const bool in_place =
        send == static_cast<char*>(recv) + static_cast<size_t>(rank_) * count * dtype_size(dtype);
    const MPI_Datatype type = mpi_datatype(dtype);
    MpiOperation op;
    op.start = [=, this](MPI_Request* request) {
      return in_place
                 ? MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv, mpi_count, type, comm_,
                                  request)
                 : MPI_Iallgather(send, mpi_count, type, recv, mpi_count, type, comm_, request);
    };
    return submit(std::move(op), info);
  }

  std::unique_ptr<Work> broadcast_async(void* buf, size_t count, DataType dtype,
                                        int root) override {
    const WorkInfo info = make_work_info(*this, "broadcast", count, dtype);
    const int mpi_count = checked_count(info, count);
    if (root < 0 || root >= world_size_) {
      throw CommError(failure_message(info, "root " + std::to_string(root) +
                                                " is not a rank (expected 0.." +
                                                std::to_string(world_size_ - 1) + ")"));
    }
    const MPI_Datatype type = mpi_datatype(dtype);
    MpiOperation op;
    op.start = [=, this](MPI_Request* request) {
      return MPI_Ibcast(buf, mpi_count, type, root, comm_, request);
    };
    return submit(std::move(op), info);
  }

  void barrier() override {
    const WorkInfo info = make_work_info(*this, "barrier", 0, DataType::kFloat32);
    MpiOperation op;
    op.start = [this](MPI_Request* request) { return MPI_Ibarrier(comm_, request); };
    submit(std::move(op), info)->wait(timeout_);
  }

 private:
  std::unique_ptr<Work> submit(MpiOperation op, const WorkInfo& info) {
    ++counters_.collectives;
    op.state = std::make_shared<MpiWorkState>();
    auto work = std::make_unique<MpiWork>(op.state, engine_, info);
    engine_->submit(std::move(op));
    return work;
  }

  static int checked_count(const WorkInfo& info, size_t count) {
    if (count > static_cast<size_t>(INT_MAX)) {
      throw CommError(
          failure_message(info, "count " + std::to_string(count) + " exceeds MPI's int limit " +
                                    std::to_string(INT_MAX) + " (split the buffer into buckets)"));
    }
    return static_cast<int>(count);
  }

  static void check_op(const WorkInfo& info, const CollectiveOptions& opts) {
    if (opts.op == ReduceOp::kAvg && opts.dtype == DataType::kInt64) {
      throw CommError(failure_message(info, "ReduceOp::kAvg needs float32 or float64, got int64"));
    }
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int world_size_ = 1;
  int local_rank_ = 0;
  std::shared_ptr<MpiProgressEngine> engine_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator() {
  return std::make_unique<MpiCommunicator>();
}

}  // namespace accum::comm
