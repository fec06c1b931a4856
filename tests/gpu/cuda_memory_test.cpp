// tests/gpu/cuda_memory_test.cpp — the CUDA back end's memory edge, which the worker's
// memory report and out-of-memory advice (daemon/worker/train/memory_plan.h) stand on:
//   * an allocation larger than the device throws std::bad_alloc (not a CUDA error), and
//     the back end keeps working afterwards (the runtime's error is cleared);
//   * memory_info() sees allocations and releases, and the total is the device's.
#include <gtest/gtest.h>

#include <new>
#include <vector>

#include "tests/gpu/gpu_test_util.h"

namespace accum::kernels::gpu_testing {
namespace {

TEST(CudaMemory, OutOfMemoryIsBadAllocAndTheBackendKeepsWorking) {
  ACCUM_REQUIRE_CUDA();
  auto backend = make_backend(DeviceKind::kCuda);
  size_t used = 0, total = 0;
  ASSERT_TRUE(backend->memory_info(&used, &total));
  bool threw_bad_alloc = false;
  try {
    backend->release(backend->alloc(total * 2));
  } catch (const std::bad_alloc&) {
    threw_bad_alloc = true;
  }
  EXPECT_TRUE(threw_bad_alloc) << "allocating twice the device's memory";
  // Still usable: a small round trip through a kernel (f32 -> bf16 -> f32).
  const std::vector<float> values = {1.f, -2.5f, 3.25f, 0.f};
  Buffer f32(*backend, values.size() * sizeof(float)), act(*backend, values.size() * 2);
  backend->upload(f32.get(), values.data(), values.size() * sizeof(float));
  backend->f32_to_act(act.get(), f32.f32(), values.size());
  Buffer back(*backend, values.size() * sizeof(float));
  backend->act_to_f32(back.f32(), act.get(), values.size());
  EXPECT_TRUE(download_f32(*backend, back.get(), values.size()) == values)
      << "bf16 round trip of values bf16 holds exactly";
}

TEST(CudaMemory, MemoryInfoSeesAllocationsAndReleases) {
  ACCUM_REQUIRE_CUDA();
  auto backend = make_backend(DeviceKind::kCuda);
  size_t before = 0, total = 0;
  ASSERT_TRUE(backend->memory_info(&before, &total));
  EXPECT_GT(total, size_t{0});
  const size_t bytes = size_t{64} << 20;
  void* block = backend->alloc(bytes);
  size_t during = 0;
  ASSERT_TRUE(backend->memory_info(&during, &total));
  EXPECT_LE(before + bytes, during) << "a 64 MiB allocation is not in memory_info";
  backend->release(block);
  size_t after = 0;
  ASSERT_TRUE(backend->memory_info(&after, &total));
  EXPECT_LE(after, during - bytes + (size_t{4} << 20)) << "the release is not in memory_info";
}

}  // namespace
}  // namespace accum::kernels::gpu_testing
