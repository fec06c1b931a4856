// tests/comm/comm_test_support.h — what the comm tests share: the job-wide MPI
// communicator (created once by main, so every rank creates it in the same order)
// and deterministic fill patterns whose sums over ranks are exact in fp32.
#pragma once

#include <memory>
#include <string>

#include "daemon/worker/comm/communicator.h"

namespace accum::comm::commtest {

// The MPI communicator over every rank of the test job (world size 1 without mpirun).
Communicator& world();

// A communicator of `backend` for one test: the shared world() for kMpi, a fresh one
// for kSingle (held in `owner`).
Communicator* acquire(CommBackend backend, std::unique_ptr<Communicator>* owner);

inline std::string backend_label(CommBackend backend) {
  return backend == CommBackend::kSingle ? "Single" : backend == CommBackend::kMpi ? "Mpi" : "Nccl";
}

// value(rank, i) = (rank + 1) * (i % 13 + 1): small integers, so sums are exact.
inline float pattern(int rank, size_t i) {
  return static_cast<float>((rank + 1) * static_cast<int>(i % 13 + 1));
}
// sum over ranks 0..world-1 of pattern(rank, i) = (i % 13 + 1) * W (W + 1) / 2.
inline float pattern_sum(int world_size, size_t i) {
  return static_cast<float>(static_cast<int>(i % 13 + 1) * world_size * (world_size + 1) / 2);
}

}  // namespace accum::comm::commtest
