// comm/communicator.h — collectives between the ranks of one job, in the spirit of
// PyTorch's c10d ProcessGroup: one virtual method per collective, an options
// struct with defaults, an async Work handle.
//
// The trainer calls a Communicator only at the accumulation boundary and never
// names a back end. Every rank must issue the same collectives in the same order.
// Buffers are device buffers of the back end the communicator was made for
// (host memory for single-process and MPI; GPU memory for NCCL).
//
// Thread safety: a Communicator is driven by one thread (the trainer's); back ends
// may progress work on threads of their own. A Work handle may outlive its
// Communicator; the buffers it names must stay live until it completes.
//
// Failure model: a collective that does not finish within its timeout throws
// CommError from Work::wait(); the job cannot continue past that (the ranks are out
// of step), so the caller ends it with abort_job(), which makes mpirun return
// non-zero on every rank.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

namespace accum::comm {

enum class ReduceOp { kSum, kAvg };
enum class DataType { kFloat32, kFloat64, kInt64 };
size_t dtype_size(DataType dtype);

struct CollectiveOptions {
  ReduceOp op = ReduceOp::kSum;
  DataType dtype = DataType::kFloat32;
};

// Counters the trainer reports per optimizer step (reset by the trainer).
struct CommCounters {
  int64_t collectives = 0;           // every collective issued
  int64_t gradient_collectives = 0;  // collectives on the gradient buffer / parameters
  int64_t bytes_reduced = 0;         // payload bytes of gradient reductions (all-reduce,
                                     // reduce-scatter): the gradient size once per step
  int64_t bytes_gathered = 0;        // payload bytes of parameter all-gathers (ZeRO-1)
  double exposed_ms = 0;             // time the trainer spent blocked in wait()
};

// Handle to an issued collective.
class Work {
 public:
  virtual ~Work() = default;
  // Non-blocking: whether the collective has finished.
  virtual bool is_completed() = 0;
  // Blocks until finished. Throws CommError when it fails or when `timeout`
  // passes (the message names the collective, the rank and the timeout).
  virtual void wait(std::chrono::milliseconds timeout) = 0;
};

class CommError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual const char* backend_name() const = 0;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual int local_rank() const = 0;  // rank among the processes on this node

  // Every *_async method counts one collective in counters().collectives, and throws
  // CommError at once when the call is invalid (dtype, count) or the back end failed.

  // In place: buf(count) = op over ranks of buf.
  virtual std::unique_ptr<Work> all_reduce_async(void* buf, size_t count,
                                                 const CollectiveOptions& opts) = 0;
  // recv(count) = op over ranks of send[rank*count .. (rank+1)*count).
  // In place when recv == send + rank*count (then the rest of send is undefined after).
  virtual std::unique_ptr<Work> reduce_scatter_async(const void* send, void* recv, size_t count,
                                                     const CollectiveOptions& opts) = 0;
  // recv(count*world) = concat over ranks of send(count). send may alias recv + rank*count.
  virtual std::unique_ptr<Work> all_gather_async(const void* send, void* recv, size_t count,
                                                 DataType dtype) = 0;
  virtual std::unique_ptr<Work> broadcast_async(void* buf, size_t count, DataType dtype,
                                                int root) = 0;
  // Blocks until every rank arrives; throws CommError after default_timeout().
  virtual void barrier() = 0;

  // Memory of this back end's device (host for single-process and MPI, GPU for NCCL),
  // used for staging buffers. alloc_buffer returns zeroed memory the caller releases
  // with free_buffer; copy_buffer is ordered after collectives already issued and
  // complete on return.
  virtual void* alloc_buffer(size_t bytes);
  virtual void free_buffer(void* buffer);
  virtual void copy_buffer(void* dst, const void* src, size_t bytes);
  virtual void zero_buffer(void* buffer, size_t bytes);
  // NCCL: collectives and buffer copies first wait for the work already queued on
  // this cudaStream_t (the compute stream that writes the gradients); without it, on
  // the legacy default stream. Host back ends ignore it.
  virtual void set_compute_stream(void* cuda_stream) { (void)cuda_stream; }

  // Blocking twins: issue, then wait(default_timeout()).
  void all_reduce(void* buf, size_t count, const CollectiveOptions& opts = {});
  void reduce_scatter(const void* send, void* recv, size_t count,
                      const CollectiveOptions& opts = {});
  void all_gather(const void* send, void* recv, size_t count, DataType dtype = DataType::kFloat32);
  void broadcast(void* buf, size_t count, DataType dtype, int root);

  std::chrono::milliseconds default_timeout() const { return timeout_; }
  void set_default_timeout(std::chrono::milliseconds timeout) { timeout_ = timeout; }
  // Step-boundary context for error messages ("rank 2, optimizer step 17").
  void set_step(int64_t step) { step_ = step; }
  int64_t step() const { return step_; }
  CommCounters& counters() { return counters_; }

 protected:
  std::chrono::milliseconds timeout_{300000};
  int64_t step_ = 0;
  CommCounters counters_;
};

enum class CommBackend { kSingle, kMpi, kNccl };

// Creates the communicator: kSingle (one process, collectives are copies), kMpi
// (Open MPI; calls MPI_Init_thread if needed), kNccl (GPU buffers; ncclUniqueId
// broadcast over MPI). `timeout` becomes its default_timeout(); kNccl's setup gets as
// long, then ends the job (abort_job) rather than wait for ever on a rank that never
// joins. Throws CommError when the back end is unavailable. TEST ONLY: also throws on
// the rank named by $ACCUM_TEST_FAIL_COMM_SETUP_RANK (fault injection).
std::unique_ptr<Communicator> make_communicator(
    CommBackend backend, std::chrono::milliseconds timeout = std::chrono::milliseconds(300000));
// Whether this process was started by mpirun/srun (world size > 1 possible).
bool launched_under_mpi();
// Finalizes MPI if this process initialized it (call once before exit, after every
// Communicator is destroyed).
void finalize_communicators();
// Ends the whole job after a failure one rank cannot recover from (a failed
// collective, input that rank rejects): logs `why` with the rank and optimizer step,
// then MPI_Abort(MPI_COMM_WORLD, exit_code) when MPI is running (mpirun stops every
// rank and exits with `exit_code`), else exits with `exit_code`. The code is the
// worker's (daemon/worker/exit_codes.h). `comm` may be null.
// REQUIRES: exit_code != 0.
[[noreturn]] void abort_job(Communicator* comm, const std::string& why, int exit_code);

}  // namespace accum::comm
