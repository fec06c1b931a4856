// tests/simt/nccl.cpp — the part of NCCL that daemon/worker/comm/nccl_comm.cpp calls,
// for the SIMT emulator (simt.h) in place of libnccl: every rank is an MPI process with
// an emulated GPU, and each collective runs as the matching MPI collective over the
// ranks of the communicator when it is enqueued (the emulated streams finish work at
// once). This runs the NCCL back end, GradReducer's device buffers and ZeRO-1 across
// 2 and 4 ranks in CI, which a one-GPU machine cannot (NCCL wants one GPU per rank).
//
// What NCCL requires is checked: buffers must be device memory of the right size (the
// emulated cudaMalloc's), ranks and counts must agree (MPI would hang or fail
// otherwise), and a communicator is unusable after ncclCommAbort. A test-only fault makes
// collectives never complete (ACCUM_SIMT_NCCL_HANG_AFTER, never_completes).
#include <mpi.h>
#include <nccl.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "tests/simt/simt_runtime.h"

struct ncclComm {
  MPI_Comm mpi = MPI_COMM_NULL;
  int rank = 0, size = 1;
  bool aborted = false;
};

namespace {

ncclResult_t invalid(const std::string& why) {
  std::fprintf(stderr, "SIMT emulator (NCCL): invalid argument: %s\n", why.c_str());
  return ncclInvalidArgument;
}

bool mpi_type(ncclDataType_t type, MPI_Datatype* mpi, size_t* bytes) {
  switch (type) {
    case ncclFloat32:
      *mpi = MPI_FLOAT;
      *bytes = 4;
      return true;
    case ncclFloat64:
      *mpi = MPI_DOUBLE;
      *bytes = 8;
      return true;
    case ncclInt64:
      *mpi = MPI_INT64_T;
      *bytes = 8;
      return true;
    default:
      return false;  // the back end uses only these three
  }
}

ncclResult_t check_comm(ncclComm_t comm) {
  if (comm == nullptr) return invalid("null communicator");
  if (comm->aborted) return invalid("communicator used after ncclCommAbort");
  return ncclSuccess;
}

// What every collective checks first: a live communicator, a type accumd uses, the
// stream. Sets the MPI type and element size.
ncclResult_t begin_collective(ncclComm_t comm, ncclDataType_t datatype, cudaStream_t stream,
                              MPI_Datatype* type, size_t* bytes) {
  if (const ncclResult_t rc = check_comm(comm); rc != ncclSuccess) return rc;
  if (!mpi_type(datatype, type, bytes)) return invalid("data type not used by accumd");
  accum::simt::check_stream(stream);
  return ncclSuccess;
}

bool reduction_used(ncclRedOp_t op) { return op == ncclSum || op == ncclAvg; }

// TEST ONLY: with ACCUM_SIMT_NCCL_HANG_AFTER=n, the process's first n collectives run and
// every later one never completes, as when another rank never joins it: no MPI call is made
// and `stream` hangs (simt_runtime.h: its later events stay not ready) until ncclCommAbort.
// Lets a test see the collective timeout's message on emulated GPUs.
bool never_completes(cudaStream_t stream) {
  static const long hang_after = [] {
    const char* env = std::getenv("ACCUM_SIMT_NCCL_HANG_AFTER");
    return env != nullptr ? std::atol(env) : -1L;
  }();
  static long issued = 0;
  if (hang_after < 0 || issued++ < hang_after) return false;
  accum::simt::hang_stream(stream);
  return true;
}

ncclResult_t mpi_result(int rc) { return rc == MPI_SUCCESS ? ncclSuccess : ncclSystemError; }

// Sum (or average) of `count` elements of every rank into `recv`.
ncclResult_t reduce_all(const void* send, void* recv, size_t count, MPI_Datatype type, size_t bytes,
                        ncclRedOp_t op, MPI_Comm mpi, int size) {
  std::vector<unsigned char> input(static_cast<const unsigned char*>(send),
                                   static_cast<const unsigned char*>(send) + count * bytes);
  const int rc = MPI_Allreduce(input.data(), recv, static_cast<int>(count), type, MPI_SUM, mpi);
  if (rc != MPI_SUCCESS) return ncclSystemError;
  if (op == ncclAvg) {
    if (type == MPI_FLOAT) {
      for (size_t i = 0; i < count; ++i) static_cast<float*>(recv)[i] /= static_cast<float>(size);
    } else if (type == MPI_DOUBLE) {
      for (size_t i = 0; i < count; ++i) static_cast<double*>(recv)[i] /= size;
    } else {
      return invalid("ncclAvg of integers");
    }
  }
  return ncclSuccess;
}

}  // namespace

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  std::random_device random;
  for (char& c : id->internal) c = static_cast<char>(random());
  return ncclSuccess;
}

// Collective over MPI_COMM_WORLD (every rank of the job creates its communicator, as the
// back end does): ranks with the same id form one communicator, ordered by `rank`.
ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) return invalid("the emulated NCCL runs over MPI: MPI_Init first");
  if (rank < 0 || rank >= nranks) return invalid("rank outside 0..nranks-1");
  uint32_t color = 0;
  for (char c : id.internal) color = color * 31 + static_cast<unsigned char>(c);
  auto* created = new ncclComm;
  if (MPI_Comm_split(MPI_COMM_WORLD, static_cast<int>(color & 0x7fffffff), rank, &created->mpi) !=
      MPI_SUCCESS) {
    delete created;
    return ncclSystemError;
  }
  MPI_Comm_rank(created->mpi, &created->rank);
  MPI_Comm_size(created->mpi, &created->size);
  if (created->size != nranks || created->rank != rank) {
    MPI_Comm_free(&created->mpi);
    delete created;
    return invalid("ranks disagree on nranks, or two ranks claim the same rank");
  }
  *comm = created;
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (comm == nullptr) return ncclSuccess;
  int finalized = 0;
  MPI_Finalized(&finalized);  // real NCCL does not need MPI to tear down: may come after
  if (!comm->aborted && !finalized) MPI_Comm_free(&comm->mpi);
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (comm == nullptr) return ncclSuccess;
  comm->aborted = true;  // the MPI communicator is left to MPI_Finalize: peers may be stuck
  accum::simt::release_hung_streams();  // its kernels end
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* error) {
  *error = ncclSuccess;
  return check_comm(comm);
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess:
      return "no error";
    case ncclSystemError:
      return "unhandled system error (SIMT emulator: an MPI call failed)";
    case ncclInvalidArgument:
      return "invalid argument";
    default:
      return "NCCL error (SIMT emulator)";
  }
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  MPI_Datatype type;
  size_t bytes;
  if (const ncclResult_t rc = begin_collective(comm, datatype, stream, &type, &bytes);
      rc != ncclSuccess) {
    return rc;
  }
  if (!reduction_used(op)) return invalid("reduction not used by accumd");
  accum::simt::check_device_range(send, count * bytes, "ncclAllReduce send buffer");
  accum::simt::check_device_range(recv, count * bytes, "ncclAllReduce receive buffer");
  if (never_completes(stream)) return ncclSuccess;
  return reduce_all(send, recv, count, type, bytes, op, comm->mpi, comm->size);
}

// recv (recvcount) = rank's slice of the reduction of every rank's send (size * recvcount);
// in place when recv == send + rank * recvcount.
ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t recvcount,
                               ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                               cudaStream_t stream) {
  MPI_Datatype type;
  size_t bytes;
  if (const ncclResult_t rc = begin_collective(comm, datatype, stream, &type, &bytes);
      rc != ncclSuccess) {
    return rc;
  }
  if (!reduction_used(op)) return invalid("reduction not used by accumd");
  const size_t total = recvcount * comm->size;
  accum::simt::check_device_range(send, total * bytes, "ncclReduceScatter send buffer");
  accum::simt::check_device_range(recv, recvcount * bytes, "ncclReduceScatter receive buffer");
  if (never_completes(stream)) return ncclSuccess;
  std::vector<unsigned char> reduced(total * bytes);
  if (const ncclResult_t rc =
          reduce_all(send, reduced.data(), total, type, bytes, op, comm->mpi, comm->size);
      rc != ncclSuccess) {
    return rc;
  }
  std::memcpy(recv, reduced.data() + comm->rank * recvcount * bytes, recvcount * bytes);
  return ncclSuccess;
}

// recv (size * sendcount) = every rank's send, in rank order; in place when
// send == recv + rank * sendcount.
ncclResult_t ncclAllGather(const void* send, void* recv, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream) {
  MPI_Datatype type;
  size_t bytes;
  if (const ncclResult_t rc = begin_collective(comm, datatype, stream, &type, &bytes);
      rc != ncclSuccess) {
    return rc;
  }
  accum::simt::check_device_range(send, sendcount * bytes, "ncclAllGather send buffer");
  accum::simt::check_device_range(recv, sendcount * comm->size * bytes,
                                  "ncclAllGather receive buffer");
  if (never_completes(stream)) return ncclSuccess;
  std::vector<unsigned char> mine(static_cast<const unsigned char*>(send),
                                  static_cast<const unsigned char*>(send) + sendcount * bytes);
  return mpi_result(MPI_Allgather(mine.data(), static_cast<int>(sendcount), type, recv,
                                  static_cast<int>(sendcount), type, comm->mpi));
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t datatype,
                           int root, ncclComm_t comm, cudaStream_t stream) {
  MPI_Datatype type;
  size_t bytes;
  if (const ncclResult_t rc = begin_collective(comm, datatype, stream, &type, &bytes);
      rc != ncclSuccess) {
    return rc;
  }
  if (root < 0 || root >= comm->size) return invalid("root outside the communicator");
  accum::simt::check_device_range(recv, count * bytes, "ncclBroadcast receive buffer");
  if (comm->rank == root) {
    accum::simt::check_device_range(send, count * bytes, "ncclBroadcast send buffer");
  }
  if (never_completes(stream)) return ncclSuccess;
  if (comm->rank == root && send != recv) std::memmove(recv, send, count * bytes);
  return mpi_result(MPI_Bcast(recv, static_cast<int>(count), type, root, comm->mpi));
}
