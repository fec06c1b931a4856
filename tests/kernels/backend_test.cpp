// The CPU Backend's memory contract and identity: zero-filled 64-byte-aligned
// alloc, bad_alloc on impossible sizes, fp32 activations with no working copy.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace accum::kernels {
namespace {

TEST(CpuBackend, Identity) {
  auto backend = make_backend(DeviceKind::kCpu);
  EXPECT_EQ(backend->kind(), DeviceKind::kCpu);
  EXPECT_EQ(backend->act_bytes(), 4u);
  EXPECT_FALSE(backend->has_working_copy());
  EXPECT_EQ(backend->attention_saved_bytes(2, 8, 3), 2u * 3 * 8 * 8 * sizeof(float));
  std::string why;
  EXPECT_TRUE(backend_available(DeviceKind::kCpu, &why));
}

TEST(CpuBackend, AllocIsZeroedAndAligned) {
  auto backend = make_cpu_backend();
  for (size_t bytes : {size_t(0), size_t(1), size_t(63), size_t(64), size_t(1000003)}) {
    // Dirty the heap first so zero-fill is not an accident of fresh pages.
    std::vector<void*> dirty;
    for (int i = 0; i < 4; ++i) {
      void* p = backend->alloc(bytes + 64);
      std::memset(p, 0xAB, bytes + 64);
      dirty.push_back(p);
    }
    for (void* p : dirty) backend->release(p);
    auto* ptr = static_cast<uint8_t*>(backend->alloc(bytes));
    ASSERT_NE(ptr, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(ptr) % 64, 0u) << bytes << " bytes";
    for (size_t i = 0; i < bytes; ++i) ASSERT_EQ(ptr[i], 0) << "byte " << i << " of " << bytes;
    backend->release(ptr);
  }
}

TEST(CpuBackend, ImpossibleAllocThrowsBadAlloc) {
  auto backend = make_cpu_backend();
  EXPECT_THROW(backend->alloc(std::numeric_limits<size_t>::max() - 8), std::bad_alloc);
  EXPECT_THROW(backend->alloc(std::numeric_limits<size_t>::max() / 2), std::bad_alloc);
}

TEST(CpuBackend, CopiesAndConversions) {
  auto backend = make_cpu_backend();
  const std::vector<float> host = {1.5f, -2.0f, 3.25f};
  auto* dev = static_cast<float*>(backend->alloc(sizeof(float) * 3));
  backend->upload(dev, host.data(), sizeof(float) * 3);
  std::vector<float> back(3), converted(3);
  backend->download(back.data(), dev, sizeof(float) * 3);
  EXPECT_EQ(back, host);
  backend->act_to_f32(converted.data(), dev, 3);
  EXPECT_EQ(converted, host);
  backend->fill_zero(dev, sizeof(float) * 3);
  backend->download(back.data(), dev, sizeof(float) * 3);
  EXPECT_EQ(back, std::vector<float>(3, 0.0f));
  backend->release(dev);
}

}  // namespace
}  // namespace accum::kernels
