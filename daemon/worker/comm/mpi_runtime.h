// comm/mpi_runtime.h — the process-wide MPI state shared by the MPI and NCCL back
// ends: initialization (once, asking for MPI_THREAD_MULTIPLE), the thread level
// granted, the lock that serializes MPI calls when that level is below MULTIPLE, and
// finalization. Internal to comm/.
//
// Thread safety: every function here may be called from any thread.
#pragma once

#include <mpi.h>

#include <mutex>

#include "daemon/worker/comm/communicator.h"

namespace accum::comm {

// Initializes MPI unless it already is (by us or by the program); returns the thread
// level granted (MPI_THREAD_SINGLE .. MPI_THREAD_MULTIPLE). Throws CommError when MPI
// was already finalized.
int ensure_mpi_initialized();
// Whether MPI is initialized and not yet finalized.
bool mpi_is_running();
// Finalizes MPI if ensure_mpi_initialized() initialized it; idempotent.
void finalize_mpi_if_owned();

// Holds the process-wide MPI lock unless the library granted MPI_THREAD_MULTIPLE,
// so that two threads never call MPI at once under a lower level.
class MpiCallGuard {
 public:
  MpiCallGuard();
  ~MpiCallGuard();
  MpiCallGuard(const MpiCallGuard&) = delete;
  MpiCallGuard& operator=(const MpiCallGuard&) = delete;

 private:
  std::unique_lock<std::mutex> lock_;
};

MPI_Datatype mpi_datatype(DataType dtype);
// Throws CommError "<what> failed: <MPI error string>" unless rc == MPI_SUCCESS.
void check_mpi(int rc, const char* what);

}  // namespace accum::comm
