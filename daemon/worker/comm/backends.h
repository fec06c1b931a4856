// comm/backends.h — constructors of the concrete back ends, called only by
// make_communicator(). Internal to comm/.
#pragma once

#include <memory>

#include "daemon/worker/comm/communicator.h"

namespace accum::comm {

std::unique_ptr<Communicator> make_single_communicator();
std::unique_ptr<Communicator> make_mpi_communicator();
#ifdef ACCUM_HAVE_CUDA
std::unique_ptr<Communicator> make_nccl_communicator();
#endif

}  // namespace accum::comm
