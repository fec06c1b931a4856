// comm/nccl_comm.cpp — the NCCL back end (GPU buffers). Compiled only with CUDA.
//
// Bootstrap: MPI gives rank, world size and the rank among the processes of this
// node (MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)); local rank l drives GPU l; rank 0
// makes the ncclUniqueId and broadcasts it over MPI; then ncclCommInitRank. Neither call
// can be interrupted, and either waits for ever on a rank that never arrives (hung, or
// unable to reach rank 0 over the network), so a watchdog thread ends the whole job
// (abort_job: MPI_Abort) when the setup outlasts the collective timeout, saying where
// this rank waits.
// Every collective runs on the communicator's own stream, after the compute stream's
// queued work (an event), and records a completion event that the Work polls:
// wait() spins on cudaEventQuery and ncclCommGetAsyncError until its deadline, and on
// timeout aborts the NCCL communicator (ncclCommAbort) so that no kernel stays stuck,
// then throws CommError. After an abort every call throws.
// Buffers: the gradients are device memory; the trainer's per-step scalars (loss sums,
// stop votes, norms, checkpoint agreement) are host memory, which NCCL cannot read. A
// collective on host buffers is staged through a device buffer and finishes before it
// returns (a few bytes, once per optimizer step).
#ifdef ACCUM_HAVE_CUDA

#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include "daemon/worker/comm/backends.h"
#include "daemon/worker/comm/mpi_runtime.h"
#include "daemon/worker/comm/work_info.h"
#include "daemon/worker/exit_codes.h"

namespace accum::comm {
namespace {

void check_cuda(cudaError_t rc, const char* call, const char* file, int line) {
  if (rc == cudaSuccess) return;
  throw CommError(std::string(call) + " failed at " + file + ":" + std::to_string(line) + ": " +
                  cudaGetErrorString(rc));
}
void check_nccl(ncclResult_t rc, const char* call, const char* file, int line) {
  if (rc == ncclSuccess) return;
  throw CommError(std::string(call) + " failed at " + file + ":" + std::to_string(line) + ": " +
                  ncclGetErrorString(rc));
}
#define ACCUM_CUDA_CHECK(call) check_cuda((call), #call, __FILE__, __LINE__)
#define ACCUM_NCCL_CHECK(call) check_nccl((call), #call, __FILE__, __LINE__)

ncclDataType_t nccl_datatype(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat32:
      return ncclFloat32;
    case DataType::kFloat64:
      return ncclFloat64;
    case DataType::kInt64:
      return ncclInt64;
  }
  throw CommError("unknown DataType " + std::to_string(static_cast<int>(dtype)));
}

size_t dtype_bytes(DataType dtype) { return dtype == DataType::kFloat32 ? 4 : 8; }

// True for memory NCCL cannot use: not device (or managed) memory.
bool is_host_memory(const void* p) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, p) != cudaSuccess) {
    (void)cudaGetLastError();  // older drivers: unregistered host memory is an error
    return true;
  }
  return attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged;
}

// The NCCL communicator, shared with Work handles so that a Work's timeout can abort it.
struct NcclShared {
  ncclComm_t comm = nullptr;
  int device = 0;
  std::mutex abort_mutex;
  std::atomic<bool> aborted{false};

  void abort() {
    std::lock_guard<std::mutex> lock(abort_mutex);
    if (aborted.exchange(true)) return;
    ncclCommAbort(comm);
  }
};

// Polls `event` until it completes, NCCL reports an asynchronous error, or `timeout`
// passes (then aborts the communicator). Throws CommError with `info` on failure.
void wait_for_event(NcclShared* shared, cudaEvent_t event, const WorkInfo& info,
                    std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (shared->aborted.load()) {
      throw CommError(failure_message(info, "the NCCL communicator was aborted"));
    }
    const cudaError_t query = cudaEventQuery(event);
    if (query == cudaSuccess) return;
    if (query != cudaErrorNotReady) {
      // CUDA errors are sticky: this may be any earlier kernel's fault, not the collective's.
      throw CommError(failure_message(
          info, std::string("CUDA error while waiting for it (possibly from an earlier kernel "
                            "on this GPU): ") +
                    cudaGetErrorString(query)));
    }
    ncclResult_t async_error = ncclSuccess;
    const ncclResult_t asked = ncclCommGetAsyncError(shared->comm, &async_error);
    if (asked != ncclSuccess) async_error = asked;  // cannot even ask: as bad as an error
    if (async_error != ncclSuccess && async_error != ncclInProgress) {
      shared->abort();
      throw CommError(
          failure_message(info, std::string("NCCL: ") + ncclGetErrorString(async_error)));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      shared->abort();
      throw CommError(timeout_message(info, timeout) + " (NCCL communicator aborted)");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

// TEST ONLY: the rank named by $ACCUM_TEST_STALL_NCCL_SETUP_RANK sleeps before its NCCL
// setup until the job is ended, as a rank that never arrives would
// (tests/distributed/gpu_ranks_test.cpp, run on emulated GPUs in CI).
constexpr char kTestStallSetupRankEnv[] = "ACCUM_TEST_STALL_NCCL_SETUP_RANK";

void stall_if_named_by_test(int rank) {
  const char* stalled = std::getenv(kTestStallSetupRankEnv);
  if (stalled == nullptr || std::to_string(rank) != stalled) return;
  comm_logger()->warn("rank {} stalls before its NCCL setup ({}, a test-only fault)", rank,
                      kTestStallSetupRankEnv);
  for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
}

// While alive, ends the whole job if it is not destroyed within `timeout`: the watched
// calls (MPI_Bcast, ncclCommInitRank) block without a deadline of their own. phase()
// names the call in progress for the message.
class SetupWatchdog {
 public:
  SetupWatchdog(int rank, int world_size, std::chrono::milliseconds timeout)
      : rank_(rank), world_size_(world_size), timeout_(timeout), thread_([this] { watch(); }) {}
  ~SetupWatchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    woken_.notify_all();
    thread_.join();
  }
  SetupWatchdog(const SetupWatchdog&) = delete;
  SetupWatchdog& operator=(const SetupWatchdog&) = delete;

  void phase(const char* waiting_for) { waiting_for_.store(waiting_for); }

 private:
  void watch() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (woken_.wait_for(lock, timeout_, [this] { return done_; })) return;
    abort_job(nullptr,
              "NCCL setup did not finish within " + std::to_string(timeout_.count()) +
                  " ms (distributed.timeout_s) on rank " + std::to_string(rank_) + " of " +
                  std::to_string(world_size_) + ": it waits for " + waiting_for_.load() +
                  ". A rank that did not start, or that cannot reach rank 0 over the network, "
                  "holds the job here; NCCL_DEBUG=INFO shows where NCCL waits",
              worker::kExitRuntimeFailure);
  }

  const int rank_, world_size_;
  const std::chrono::milliseconds timeout_;
  std::atomic<const char*> waiting_for_{"the start of the setup"};
  std::mutex mutex_;
  std::condition_variable woken_;
  bool done_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<NcclShared> shared, cudaEvent_t done, WorkInfo info)
      : shared_(std::move(shared)), done_(done), info_(info) {}
  ~NcclWork() override { cudaEventDestroy(done_); }

  bool is_completed() override {
    // A failed collective counts as finished: wait() reports the failure.
    return shared_->aborted.load() || cudaEventQuery(done_) != cudaErrorNotReady;
  }
  void wait(std::chrono::milliseconds timeout) override {
    wait_for_event(shared_.get(), done_, info_, timeout);
  }

 private:
  std::shared_ptr<NcclShared> shared_;
  cudaEvent_t done_;
  WorkInfo info_;
};

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(std::chrono::milliseconds setup_timeout)
      : shared_(std::make_shared<NcclShared>()) {
    ensure_mpi_initialized();
    {
      MpiCallGuard guard;
      check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &mpi_comm_), "MPI_Comm_dup(MPI_COMM_WORLD)");
      MPI_Comm_rank(mpi_comm_, &rank_);
      MPI_Comm_size(mpi_comm_, &world_size_);
      MPI_Comm node_comm;
      check_mpi(
          MPI_Comm_split_type(mpi_comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node_comm),
          "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)");
      MPI_Comm_rank(node_comm, &local_rank_);
      MPI_Comm_free(&node_comm);
    }
    int devices = 0;
    ACCUM_CUDA_CHECK(cudaGetDeviceCount(&devices));
    if (local_rank_ >= devices) {
      throw CommError("NCCL: rank " + std::to_string(rank_) + " is local rank " +
                      std::to_string(local_rank_) + " but this node has " +
                      std::to_string(devices) + " GPU(s); NCCL needs one GPU per rank");
    }
    shared_->device = local_rank_;
    ACCUM_CUDA_CHECK(cudaSetDevice(local_rank_));
    ACCUM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    ACCUM_CUDA_CHECK(cudaEventCreateWithFlags(&inputs_ready_, cudaEventDisableTiming));
    stall_if_named_by_test(rank_);
    {
      SetupWatchdog watchdog(rank_, world_size_, setup_timeout);
      ncclUniqueId id;
      if (rank_ == 0) ACCUM_NCCL_CHECK(ncclGetUniqueId(&id));
      watchdog.phase(rank_ == 0 ? "every rank to take the ncclUniqueId (MPI_Bcast)"
                                : "the ncclUniqueId from rank 0 (MPI_Bcast)");
      {
        MpiCallGuard guard;
        check_mpi(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, mpi_comm_), "MPI_Bcast(ncclUniqueId)");
      }
      watchdog.phase("every rank to join the communicator (ncclCommInitRank)");
      ACCUM_NCCL_CHECK(ncclCommInitRank(&shared_->comm, world_size_, id, rank_));
    }
    ACCUM_CUDA_CHECK(cudaMalloc(&barrier_scratch_, sizeof(float)));
    comm_logger()->info("NCCL {}.{}: rank {} of {} on GPU {}", NCCL_MAJOR, NCCL_MINOR, rank_,
                        world_size_, local_rank_);
  }

  ~NcclCommunicator() override {
    cudaSetDevice(shared_->device);
    if (!shared_->aborted.load()) {
      cudaStreamSynchronize(stream_);
      ncclCommDestroy(shared_->comm);
    }
    cudaFree(barrier_scratch_);
    cudaFree(staging_);
    cudaEventDestroy(inputs_ready_);
    cudaStreamDestroy(stream_);
    if (mpi_is_running()) {
      MpiCallGuard guard;
      MPI_Comm_free(&mpi_comm_);
    }
  }

  const char* backend_name() const override { return "nccl"; }
  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  int local_rank() const override { return local_rank_; }

  std::unique_ptr<Work> all_reduce_async(void* buf, size_t count,
                                         const CollectiveOptions& opts) override {
    const WorkInfo info = make_work_info(*this, "all_reduce", count, opts.dtype);
    const ncclRedOp_t op = reduce_op(info, opts);
    if (count > 0 && is_host_memory(buf)) {
      return staged(info, buf, buf, count * dtype_bytes(opts.dtype), [&](void* device) {
        return ncclAllReduce(device, device, count, nccl_datatype(opts.dtype), op, shared_->comm,
                             stream_);
      });
    }
    before_issue(info);
    ACCUM_NCCL_CHECK(
        ncclAllReduce(buf, buf, count, nccl_datatype(opts.dtype), op, shared_->comm, stream_));
    return after_issue(info);
  }

  std::unique_ptr<Work> reduce_scatter_async(const void* send, void* recv, size_t count,
                                             const CollectiveOptions& opts) override {
    // NCCL's in-place convention (recv == send + rank*count) is ours.
    const WorkInfo info = make_work_info(*this, "reduce_scatter", count, opts.dtype);
    const ncclRedOp_t op = reduce_op(info, opts);
    if (count > 0 && (is_host_memory(send) || is_host_memory(recv))) {
      throw CommError(failure_message(info, "reduce_scatter needs device buffers"));
    }
    before_issue(info);
    ACCUM_NCCL_CHECK(ncclReduceScatter(send, recv, count, nccl_datatype(opts.dtype), op,
                                       shared_->comm, stream_));
    return after_issue(info);
  }

  std::unique_ptr<Work> all_gather_async(const void* send, void* recv, size_t count,
                                         DataType dtype) override {
    const WorkInfo info = make_work_info(*this, "all_gather", count, dtype);
    if (count > 0 && (is_host_memory(send) || is_host_memory(recv))) {
      throw CommError(failure_message(info, "all_gather needs device buffers"));
    }
    before_issue(info);
    ACCUM_NCCL_CHECK(
        ncclAllGather(send, recv, count, nccl_datatype(dtype), shared_->comm, stream_));
    return after_issue(info);
  }

  std::unique_ptr<Work> broadcast_async(void* buf, size_t count, DataType dtype,
                                        int root) override {
    const WorkInfo info = make_work_info(*this, "broadcast", count, dtype);
    if (root < 0 || root >= world_size_) {
      throw CommError(failure_message(info, "root " + std::to_string(root) +
                                                " is not a rank (expected 0.." +
                                                std::to_string(world_size_ - 1) + ")"));
    }
    if (count > 0 && is_host_memory(buf)) {
      return staged(info, buf, buf, count * dtype_bytes(dtype), [&](void* device) {
        return ncclBroadcast(device, device, count, nccl_datatype(dtype), root, shared_->comm,
                             stream_);
      });
    }
    before_issue(info);
    ACCUM_NCCL_CHECK(
        ncclBroadcast(buf, buf, count, nccl_datatype(dtype), root, shared_->comm, stream_));
    return after_issue(info);
  }

  void barrier() override {
    const WorkInfo info = make_work_info(*this, "barrier", 1, DataType::kFloat32);
    before_issue(info);
    ACCUM_NCCL_CHECK(ncclAllReduce(barrier_scratch_, barrier_scratch_, 1, ncclFloat32, ncclSum,
                                   shared_->comm, stream_));
    after_issue(info)->wait(timeout_);
  }

  void* alloc_buffer(size_t bytes) override {
    ACCUM_CUDA_CHECK(cudaSetDevice(shared_->device));
    void* buffer = nullptr;
    ACCUM_CUDA_CHECK(cudaMalloc(&buffer, bytes == 0 ? 1 : bytes));
    ACCUM_CUDA_CHECK(cudaMemset(buffer, 0, bytes == 0 ? 1 : bytes));
    return buffer;
  }
  void free_buffer(void* buffer) override { cudaFree(buffer); }

  void copy_buffer(void* dst, const void* src, size_t bytes) override {
    const WorkInfo info = make_work_info(*this, "copy_buffer", bytes, DataType::kFloat32);
    if (bytes == 0 || dst == src) return;
    wait_for_compute(info);
    ACCUM_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
    drain_stream(info);
  }
  void zero_buffer(void* buffer, size_t bytes) override {
    const WorkInfo info = make_work_info(*this, "zero_buffer", bytes, DataType::kFloat32);
    if (bytes == 0) return;
    wait_for_compute(info);
    ACCUM_CUDA_CHECK(cudaMemsetAsync(buffer, 0, bytes, stream_));
    drain_stream(info);
  }
  void set_compute_stream(void* cuda_stream) override {
    compute_stream_ = static_cast<cudaStream_t>(cuda_stream);
  }

 private:
  static ncclRedOp_t reduce_op(const WorkInfo& info, const CollectiveOptions& opts) {
    if (opts.op == ReduceOp::kSum) return ncclSum;
    if (opts.dtype == DataType::kInt64) {
      throw CommError(failure_message(info, "ReduceOp::kAvg needs float32 or float64, got int64"));
    }
    return ncclAvg;
  }

  // The communication stream waits for what the compute stream has queued so far.
  void wait_for_compute(const WorkInfo& info) {
    if (shared_->aborted.load()) {
      throw CommError(failure_message(info, "the NCCL communicator was aborted earlier"));
    }
    ACCUM_CUDA_CHECK(cudaSetDevice(shared_->device));
    ACCUM_CUDA_CHECK(cudaEventRecord(
        inputs_ready_, compute_stream_ != nullptr ? compute_stream_ : cudaStreamLegacy));
    ACCUM_CUDA_CHECK(cudaStreamWaitEvent(stream_, inputs_ready_, 0));
  }
  void before_issue(const WorkInfo& info) {
    wait_for_compute(info);
    ++counters_.collectives;
  }
  std::unique_ptr<Work> after_issue(const WorkInfo& info) {
    cudaEvent_t done;
    ACCUM_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    ACCUM_CUDA_CHECK(cudaEventRecord(done, stream_));
    return std::make_unique<NcclWork>(shared_, done, info);
  }
  // Waits (with the default timeout) for everything queued on the stream.
  void drain_stream(const WorkInfo& info) { after_issue(info)->wait(timeout_); }

  // A collective over host memory: `bytes` of `input` go to a device staging buffer, the
  // collective runs there (issue(staging)), the result comes back to `output`; done
  // (or thrown) on return.
  template <typename Issue>
  std::unique_ptr<Work> staged(const WorkInfo& info, const void* input, void* output, size_t bytes,
                               Issue issue) {
    before_issue(info);
    if (bytes > staging_bytes_) {
      ACCUM_CUDA_CHECK(cudaStreamSynchronize(stream_));
      if (staging_ != nullptr) ACCUM_CUDA_CHECK(cudaFree(staging_));
      staging_ = nullptr;
      ACCUM_CUDA_CHECK(cudaMalloc(&staging_, bytes));
      staging_bytes_ = bytes;
    }
    ACCUM_CUDA_CHECK(cudaMemcpyAsync(staging_, input, bytes, cudaMemcpyHostToDevice, stream_));
    ACCUM_NCCL_CHECK(issue(staging_));
    after_issue(info)->wait(timeout_);  // the timeout applies: a copy back would block
    ACCUM_CUDA_CHECK(cudaMemcpyAsync(output, staging_, bytes, cudaMemcpyDeviceToHost, stream_));
    ACCUM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return std::make_unique<CompletedWork>();
  }

  std::shared_ptr<NcclShared> shared_;
  MPI_Comm mpi_comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int world_size_ = 1;
  int local_rank_ = 0;
  cudaStream_t stream_ = nullptr;
  cudaStream_t compute_stream_ = nullptr;
  cudaEvent_t inputs_ready_ = nullptr;
  float* barrier_scratch_ = nullptr;
  void* staging_ = nullptr;  // device copy of host buffers (staged())
  size_t staging_bytes_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(std::chrono::milliseconds setup_timeout) {
  return std::make_unique<NcclCommunicator>(setup_timeout);
}

}  // namespace accum::comm

#endif  // ACCUM_HAVE_CUDA
