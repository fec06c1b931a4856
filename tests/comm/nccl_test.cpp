// tests/comm/nccl_test.cpp — the NCCL back end on GPU buffers, including GradReducer
// with ZeRO-1 (device staging buffer). SKIPPED, with the reason, when accumd was
// built without CUDA, when there is no GPU, or when this node has more ranks than
// GPUs (NCCL needs one GPU per rank).
#include <gtest/gtest.h>

#include <vector>

#include "daemon/worker/comm/communicator.h"
#include "daemon/worker/comm/grad_reducer.h"
#include "tests/comm/comm_test_support.h"

#ifdef ACCUM_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace accum::comm {
namespace {

#ifdef ACCUM_HAVE_CUDA
// Why the NCCL tests cannot run here, or "" when they can. Decided on every rank
// alike (a collective over the world), so that all ranks skip together.
std::string nccl_unavailable_reason() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 0;
  Communicator& world = commtest::world();
  int64_t ranks_without_gpu = (world.local_rank() >= devices) ? 1 : 0;
  world.all_reduce(&ranks_without_gpu, 1, {ReduceOp::kSum, DataType::kInt64});
  if (devices == 0) return "no CUDA GPU visible";
  if (ranks_without_gpu > 0) {
    return std::to_string(ranks_without_gpu) + " rank(s) have no GPU of their own";
  }
  return "";
}
#endif

TEST(NcclTest, AllReduceAndZero1OnGpuBuffers) {
#ifndef ACCUM_HAVE_CUDA
  GTEST_SKIP() << "built without CUDA (ACCUM_HAVE_CUDA off): no NCCL back end";
#else
  const std::string reason = nccl_unavailable_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  auto comm = make_communicator(CommBackend::kNccl);
  const int rank = comm->rank();
  const int world = comm->world_size();
  const size_t n = 12345;
  std::vector<float> host(n);
  for (size_t i = 0; i < n; ++i) host[i] = commtest::pattern(rank, i);
  float* device = static_cast<float*>(comm->alloc_buffer(n * sizeof(float)));
  ASSERT_EQ(cudaMemcpy(device, host.data(), n * sizeof(float), cudaMemcpyHostToDevice),
            cudaSuccess);
  comm->all_reduce(device, n);
  std::vector<float> result(n);
  ASSERT_EQ(cudaMemcpy(result.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost),
            cudaSuccess);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(result[i], commtest::pattern_sum(world, i)) << i;

  // ZeRO-1 through GradReducer: reduce-scatter, then all-gather the owned slices.
  ASSERT_EQ(cudaMemcpy(device, host.data(), n * sizeof(float), cudaMemcpyHostToDevice),
            cudaSuccess);
  {
    GradReducer reducer(comm.get(), device, n, {400, 1, true});
    reducer.begin_window();
    reducer.mark_ready_from(n / 2);
    reducer.finish();
    reducer.all_gather_params(device);  // owned slices hold the sums: gather them
    EXPECT_EQ(comm->counters().gradient_collectives,
              2 * static_cast<int64_t>(reducer.bucket_count()));
  }
  ASSERT_EQ(cudaMemcpy(result.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost),
            cudaSuccess);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(result[i], commtest::pattern_sum(world, i)) << i;
  comm->free_buffer(device);
#endif
}

}  // namespace
}  // namespace accum::comm
