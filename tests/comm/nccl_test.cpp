// tests/comm/nccl_test.cpp — the NCCL back end on GPU buffers, including GradReducer
// with ZeRO-1 (device staging buffer). SKIPPED, with the reason, when accumd was
// built without CUDA, when there is no GPU, or when this node has more ranks than
// GPUs (NCCL needs one GPU per rank).
#include <gtest/gtest.h>

#include <memory>
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

// Skips (on every rank alike) where NCCL cannot run; otherwise comm_ is an NCCL communicator.
class NcclTest : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef ACCUM_HAVE_CUDA
    GTEST_SKIP() << "built without CUDA (ACCUM_HAVE_CUDA off): no NCCL back end";
#else
    const std::string reason = nccl_unavailable_reason();
    if (!reason.empty()) GTEST_SKIP() << reason;
    comm_ = make_communicator(CommBackend::kNccl);
#endif
  }
  std::unique_ptr<Communicator> comm_;
};

TEST_F(NcclTest, AllReduceAndZero1OnGpuBuffers) {
#ifdef ACCUM_HAVE_CUDA
  Communicator* comm = comm_.get();
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
    GradReducer reducer(comm, device, n, {400, 1, true});
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

#ifdef ACCUM_HAVE_CUDA
// Host <-> device copies for the tests (the NCCL back end takes device buffers only).
template <typename T>
void to_device(void* device, const std::vector<T>& host) {
  ASSERT_EQ(cudaMemcpy(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
            cudaSuccess);
}
template <typename T>
std::vector<T> from_device(const void* device, size_t n) {
  std::vector<T> host(n);
  EXPECT_EQ(cudaMemcpy(host.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return host;
}
#endif

TEST_F(NcclTest, BroadcastGatherScatterAvgWideTypesAndHostScalars) {
#ifdef ACCUM_HAVE_CUDA
  Communicator* comm = comm_.get();
  const int rank = comm->rank(), world = comm->world_size();
  const size_t n = 1000;
  void* buf = comm->alloc_buffer(n * world * sizeof(double));

  // Broadcast from the last rank.
  std::vector<float> mine(n);
  for (size_t i = 0; i < n; ++i) mine[i] = commtest::pattern(rank, i);
  to_device(buf, mine);
  comm->broadcast(buf, n, DataType::kFloat32, world - 1);
  const auto got = from_device<float>(buf, n);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], commtest::pattern(world - 1, i)) << i;

  // All-gather in place: rank r's slice sits at r * n already.
  std::vector<float> slices(n * world, -1.f);
  for (size_t i = 0; i < n; ++i) slices[rank * n + i] = commtest::pattern(rank, i);
  to_device(buf, slices);
  float* base = static_cast<float*>(buf);
  comm->all_gather(base + rank * n, base, n);
  const auto gathered = from_device<float>(buf, n * world);
  for (int r = 0; r < world; ++r) {
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(gathered[r * n + i], commtest::pattern(r, i));
  }

  // Reduce-scatter in place, averaged: rank r keeps the mean of slice r.
  std::vector<float> full(n * world);
  for (size_t i = 0; i < full.size(); ++i) full[i] = 2.f * rank + static_cast<float>(i % 5);
  to_device(buf, full);
  comm->reduce_scatter(base, base + rank * n, n, {ReduceOp::kAvg, DataType::kFloat32});
  const auto mean = from_device<float>(base + rank * n, n);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(mean[i], static_cast<float>(world - 1) + static_cast<float>((rank * n + i) % 5));
  }

  // Wide types: float64 and an int64 beyond 2^32.
  to_device(buf, std::vector<double>{0.25 * (rank + 1)});
  comm->all_reduce(buf, 1, {ReduceOp::kSum, DataType::kFloat64});
  EXPECT_DOUBLE_EQ(from_device<double>(buf, 1)[0], 0.25 * world * (world + 1) / 2);
  to_device(buf, std::vector<int64_t>{(int64_t{1} << 40) + rank});
  comm->all_reduce(buf, 1, {ReduceOp::kSum, DataType::kInt64});
  EXPECT_EQ(from_device<int64_t>(buf, 1)[0],
            (int64_t{1} << 40) * world + int64_t{world} * (world - 1) / 2);
  // Host scalars (the trainer's per-step agreement) are staged through device memory.
  double host_sum[2] = {1.0 * (rank + 1), -2.0};
  comm->all_reduce(host_sum, 2, {ReduceOp::kSum, DataType::kFloat64});
  EXPECT_EQ(host_sum[0], world * (world + 1) / 2.0);
  EXPECT_EQ(host_sum[1], -2.0 * world);
  double host_pid = rank == 0 ? 4242.0 : 0.0;
  comm->broadcast(&host_pid, 1, DataType::kFloat64, 0);
  EXPECT_EQ(host_pid, 4242.0);
  comm->barrier();
  comm->free_buffer(buf);
#endif
}

}  // namespace
}  // namespace accum::comm
