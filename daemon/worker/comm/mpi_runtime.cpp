// comm/mpi_runtime.cpp — MPI initialization and the serialization lock.
//
// MPI_THREAD_MULTIPLE is requested because the MPI back end progresses its
// non-blocking collectives from a communication thread while the trainer's thread
// may call MPI_Abort. When the library grants less, every MPI call takes one process
// lock (MpiCallGuard), which is correct for MPI_THREAD_SERIALIZED; below that the
// back end drives progress from the caller's thread (see mpi_comm.cpp).
#include "daemon/worker/comm/mpi_runtime.h"

#include <atomic>
#include <string>

#include "daemon/worker/comm/work_info.h"

namespace accum::comm {
namespace {

std::mutex& init_mutex() {
  static std::mutex mutex;
  return mutex;
}
std::mutex& call_mutex() {
  static std::mutex mutex;
  return mutex;
}
bool g_we_initialized = false;        // GUARDED_BY(init_mutex())
std::atomic<int> g_thread_level{-1};  // -1: not known yet

}  // namespace

int ensure_mpi_initialized() {
  std::lock_guard<std::mutex> lock(init_mutex());
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) throw CommError("MPI was already finalized; cannot create an MPI communicator");
  int initialized = 0;
  MPI_Initialized(&initialized);
  int provided = MPI_THREAD_SINGLE;
  if (!initialized) {
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
    g_we_initialized = true;
    if (provided < MPI_THREAD_MULTIPLE) {
      comm_logger()->warn(
          "MPI granted thread level {} (< MPI_THREAD_MULTIPLE {}); MPI calls are serialized",
          provided, MPI_THREAD_MULTIPLE);
    }
  } else {
    MPI_Query_thread(&provided);
  }
  g_thread_level.store(provided);
  return provided;
}

bool mpi_is_running() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

void finalize_mpi_if_owned() {
  std::lock_guard<std::mutex> lock(init_mutex());
  if (!g_we_initialized) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
  g_we_initialized = false;
}

MpiCallGuard::MpiCallGuard() {
  if (g_thread_level.load() < MPI_THREAD_MULTIPLE) {
    lock_ = std::unique_lock<std::mutex>(call_mutex());
  }
}
MpiCallGuard::~MpiCallGuard() = default;

MPI_Datatype mpi_datatype(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat32:
      return MPI_FLOAT;
    case DataType::kFloat64:
      return MPI_DOUBLE;
    case DataType::kInt64:
      return MPI_INT64_T;
  }
  throw CommError("unknown DataType " + std::to_string(static_cast<int>(dtype)));
}

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(rc, text, &length);
  throw CommError(std::string(what) + " failed: " + std::string(text, length));
}

}  // namespace accum::comm
