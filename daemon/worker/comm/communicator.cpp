// comm/communicator.cpp — the parts every back end shares: blocking twins of the
// collectives, host memory helpers, error messages, launch detection, the factory,
// and abort_job().
#include "daemon/worker/comm/communicator.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <cstring>

#include "daemon/worker/comm/backends.h"
#include "daemon/worker/comm/mpi_runtime.h"
#include "daemon/worker/comm/work_info.h"

namespace accum::comm {

size_t dtype_size(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat32:
      return 4;
    case DataType::kFloat64:
    case DataType::kInt64:
      return 8;
  }
  throw CommError("unknown DataType " + std::to_string(static_cast<int>(dtype)));
}

const char* dtype_name(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat32:
      return "float32";
    case DataType::kFloat64:
      return "float64";
    case DataType::kInt64:
      return "int64";
  }
  return "unknown";
}

WorkInfo make_work_info(const Communicator& comm, const char* collective, size_t count,
                        DataType dtype) {
  WorkInfo info;
  info.collective = collective;
  info.backend = comm.backend_name();
  info.rank = comm.rank();
  info.world_size = comm.world_size();
  info.step = comm.step();
  info.count = count;
  info.dtype = dtype;
  return info;
}

static std::string describe(const WorkInfo& info) {
  return "on rank " + std::to_string(info.rank) + " of " + std::to_string(info.world_size) +
         " (optimizer step " + std::to_string(info.step) + ", " + info.backend + ", " +
         std::to_string(info.count) + " x " + dtype_name(info.dtype) + ")";
}

std::string timeout_message(const WorkInfo& info, std::chrono::milliseconds timeout) {
  return std::string(info.collective) + " timed out after " + std::to_string(timeout.count()) +
         " ms " + describe(info) +
         ": another rank did not join it (dead, hung, or issuing collectives in another order)";
}

std::string failure_message(const WorkInfo& info, const std::string& detail) {
  return std::string(info.collective) + " failed " + describe(info) + ": " + detail;
}

std::shared_ptr<spdlog::logger> comm_logger() {
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto existing = spdlog::get("comm");
    return existing ? existing : spdlog::stderr_color_mt("comm");
  }();
  return logger;
}

// ---- blocking twins -------------------------------------------------------------

void Communicator::all_reduce(void* buf, size_t count, const CollectiveOptions& opts) {
  all_reduce_async(buf, count, opts)->wait(timeout_);
}
void Communicator::reduce_scatter(const void* send, void* recv, size_t count,
                                  const CollectiveOptions& opts) {
  reduce_scatter_async(send, recv, count, opts)->wait(timeout_);
}
void Communicator::all_gather(const void* send, void* recv, size_t count, DataType dtype) {
  all_gather_async(send, recv, count, dtype)->wait(timeout_);
}
void Communicator::broadcast(void* buf, size_t count, DataType dtype, int root) {
  broadcast_async(buf, count, dtype, root)->wait(timeout_);
}

// ---- host memory (overridden by device back ends) --------------------------------

void* Communicator::alloc_buffer(size_t bytes) {
  void* buffer = std::calloc(bytes == 0 ? 1 : bytes, 1);
  if (buffer == nullptr) {
    throw CommError(std::string(backend_name()) + ": cannot allocate " + std::to_string(bytes) +
                    " bytes of staging memory");
  }
  return buffer;
}
void Communicator::free_buffer(void* buffer) { std::free(buffer); }
void Communicator::copy_buffer(void* dst, const void* src, size_t bytes) {
  if (bytes > 0 && dst != src) std::memmove(dst, src, bytes);
}
void Communicator::zero_buffer(void* buffer, size_t bytes) {
  if (bytes > 0) std::memset(buffer, 0, bytes);
}

// ---- process-level helpers ------------------------------------------------------

bool launched_under_mpi() {
  // Open MPI's mpirun, MPICH/Hydra (PMI), PMIx launchers, and Slurm's srun.
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_PROCID"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

namespace {

std::unique_ptr<Communicator> make_backend_communicator(CommBackend backend,
                                                        std::chrono::milliseconds timeout) {
  switch (backend) {
    case CommBackend::kSingle:
      return make_single_communicator();
    case CommBackend::kMpi:
      return make_mpi_communicator();
    case CommBackend::kNccl:
#ifdef ACCUM_HAVE_CUDA
      return make_nccl_communicator(timeout);
#else
      (void)timeout;
      throw CommError("the NCCL back end is not available: accumd was built without CUDA");
#endif
  }
  throw CommError("unknown CommBackend " + std::to_string(static_cast<int>(backend)));
}

// TEST ONLY: the rank named by $ACCUM_TEST_FAIL_COMM_SETUP_RANK fails its communicator
// setup after MPI is up, as a failing ncclCommInitRank would, so tests can check that the
// other ranks are not left waiting (tests/distributed/comm_setup_failure_test.cpp).
constexpr char kTestFailSetupRankEnv[] = "ACCUM_TEST_FAIL_COMM_SETUP_RANK";

}  // namespace

std::unique_ptr<Communicator> make_communicator(CommBackend backend,
                                                std::chrono::milliseconds timeout) {
  std::unique_ptr<Communicator> comm = make_backend_communicator(backend, timeout);
  comm->set_default_timeout(timeout);
  const char* failing_rank = std::getenv(kTestFailSetupRankEnv);
  if (failing_rank != nullptr && std::to_string(comm->rank()) == failing_rank) {
    throw CommError(std::string(comm->backend_name()) + " communicator setup failed on rank " +
                    failing_rank + " of " + std::to_string(comm->world_size()) + " (injected by " +
                    kTestFailSetupRankEnv + ", a test-only fault)");
  }
  return comm;
}

void finalize_communicators() { finalize_mpi_if_owned(); }

void abort_job(Communicator* comm, const std::string& why, int exit_code) {
  if (comm != nullptr) {
    comm_logger()->critical("rank {} of {} aborting the job at optimizer step {}: {}", comm->rank(),
                            comm->world_size(), comm->step(), why);
  } else {
    comm_logger()->critical("aborting the job: {}", why);
  }
  comm_logger()->flush();
  if (mpi_is_running()) {
    // No MpiCallGuard: the communication thread may be blocked inside MPI holding it,
    // and MPI_Abort is the one call that must get through.
    MPI_Abort(MPI_COMM_WORLD, exit_code);
  }
  // Not exit(): static destructors would join communication threads that may be stuck.
  std::_Exit(exit_code);
}

}  // namespace accum::comm
