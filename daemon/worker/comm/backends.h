// comm/backends.h — constructors of the concrete back ends, called only by
// make_communicator(). Internal to comm/.
#pragma once

#include <chrono>
#include <memory>

#include "daemon/worker/comm/communicator.h"

namespace accum::comm {

std::unique_ptr<Communicator> make_single_communicator();
std::unique_ptr<Communicator> make_mpi_communicator();
#ifdef ACCUM_HAVE_CUDA
// setup_timeout: how long the ncclUniqueId broadcast and ncclCommInitRank may take
// before the job is ended (abort_job).
std::unique_ptr<Communicator> make_nccl_communicator(std::chrono::milliseconds setup_timeout);
#endif

}  // namespace accum::comm
