// tests/simt/vector_access_test.cpp — the emulator checks what a GPU faults on and x86 does
// not: a vector load or store (16 or 8 bytes) at an address not aligned to its size. Compiled
// like a kernels/cuda file (prelude.h, ACCUM_SIMT_EMULATION), so it calls the kernels' own
// accessors: load128 and store128 of cuda_common.cuh.
#include <gtest/gtest.h>

#include <cstdint>

#include "kernels/cuda/cuda_common.cuh"

namespace accum::kernels::cuda {
namespace {

const simt::LaunchConfig kOneThread{dim3(1), dim3(1), 0, nullptr};

TEST(SimtEmulator, AlignedVectorAccessesRunAsOnAGpu) {
  alignas(16) bf16 values[16] = {};
  simt::launch_kernel(kOneThread, nullptr, [&] {
    store128(values + 8, load128(values));
    ACCUM_VECTOR_ACCESS(values + 4, 8);
  });
  SUCCEED() << "16-byte accesses at 16-byte boundaries, an 8-byte one at an 8-byte boundary";
}

TEST(SimtEmulatorDeathTest, MisalignedVectorLoadIsAFault) {
  alignas(16) bf16 values[16] = {};
  // bf16 row r of a matrix 50257 wide (GPT-2's vocabulary, unpadded) starts 2 * 50257 * r bytes
  // in: r = 1 is 2 bytes off any 16-byte boundary.
  EXPECT_DEATH(simt::launch_kernel(kOneThread, nullptr, [&] { (void)load128(values + 1); }),
               "16-byte vector access at an address not aligned to its size");
}

TEST(SimtEmulatorDeathTest, MisalignedVectorStoreIsAFault) {
  alignas(16) float values[8] = {};
  Packed128<float> zeros{};
  EXPECT_DEATH(simt::launch_kernel(kOneThread, nullptr, [&] { store128(values + 2, zeros); }),
               "16-byte vector access at an address not aligned to its size");
  EXPECT_DEATH(
      simt::launch_kernel(kOneThread, nullptr, [&] { ACCUM_VECTOR_ACCESS(values + 1, 8); }),
      "8-byte vector access at an address not aligned to its size");
}

}  // namespace
}  // namespace accum::kernels::cuda
