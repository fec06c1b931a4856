// tests/gpu/cuda_memory_test.cpp — the CUDA back end's memory edge, which the worker's
// memory report and out-of-memory advice (daemon/worker/train/memory_plan.h) stand on:
//   * an allocation larger than the device throws std::bad_alloc (not a CUDA error), and
//     the back end keeps working afterwards (the runtime's error is cleared);
//   * memory_info() sees allocations and releases, and the total is the device's;
//   * keeping cuBLASLt's algorithm choices (timing each new GEMM's candidates) takes no copy of
//     an output the product overwrites, and a timing that does not fit is std::bad_alloc
//     (CudaSmallDevice: on a nearly full device).
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <new>
#include <stdexcept>
#include <string>
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

// The SIMT emulator writes every byte it allocates, so filling its 80 GiB default device would
// take the host's memory: CudaSmallDevice tests run there only as simt.CudaSmallDevice, on a
// 128 MiB device (ACCUM_SIMT_DEVICE_BYTES).
#define ACCUM_REQUIRE_FILLABLE_DEVICE(backend)                                               \
  do {                                                                                       \
    cudaDeviceProp prop_{};                                                                  \
    size_t used_ = 0, total_ = 0;                                                            \
    ASSERT_EQ(cudaGetDeviceProperties(&prop_, 0), cudaSuccess);                              \
    ASSERT_TRUE((backend).memory_info(&used_, &total_));                                     \
    if (std::string(prop_.name).find("SIMT emulator") != std::string::npos &&                \
        total_ > (size_t{1} << 30)) {                                                        \
      GTEST_SKIP() << "the emulated device has " << total_                                   \
                   << " bytes, too many to fill; simt.CudaSmallDevice runs this on 128 MiB"; \
    }                                                                                        \
  } while (0)

// Holds all but about `room` bytes of the device's free memory while it lives. A GPU may not
// hand out every byte it reports free in one allocation: 1 MiB less is tried, up to 64 times.
Buffer leave_free(Backend& backend, size_t room) {
  size_t used = 0, total = 0;
  EXPECT_TRUE(backend.memory_info(&used, &total));
  size_t hold = total - used > room ? total - used - room : 0;
  for (int attempt = 1;; ++attempt) {
    try {
      return Buffer(backend, hold);
    } catch (const std::bad_alloc&) {
      if (attempt == 64 || hold == 0) throw;
      hold -= std::min(hold, size_t{1} << 20);
    }
  }
}

size_t free_bytes(Backend& backend) {
  size_t used = 0, total = 0;
  EXPECT_TRUE(backend.memory_info(&used, &total));
  return total - used;
}

// A temporary ACCUM_CUBLASLT_ALGOS file, removed with its folder.
struct AlgorithmFile {
  AlgorithmFile() {
    char pattern[] = "/tmp/accum_small_device_XXXXXX";
    EXPECT_TRUE(mkdtemp(pattern) != nullptr);
    dir = pattern;
    path = dir + "/algos.tsv";
  }
  ~AlgorithmFile() {
    std::remove(path.c_str());
    rmdir(dir.c_str());
  }
  std::string dir, path;
};

// The timed runs of a product that overwrites its output (beta 0: every forward, dinp and first
// dW) write that output. They wrote scratch copies of D and of a GELU aux matrix, each as large
// as the output (the logits: Vp x B*T bf16, 6.6 GB for GPT-2 124M at B = 64), which the memory
// plan does not hold, so a micro-batch that fit ran out of memory in its first step with
// cuda.keep_cublaslt_algorithms. Here an 8 MiB output runs with 4 MiB to spare.
TEST(CudaSmallDevice, KeepingAlgorithmsTakesNoCopyOfAnOutputTheProductOverwrites) {
  ACCUM_REQUIRE_CUDA();
  const AlgorithmFile file;
  with_env("ACCUM_CUBLASLT_ALGOS", file.path.c_str(), [&] {
    auto be = make_backend(DeviceKind::kCuda);
    ACCUM_REQUIRE_FILLABLE_DEVICE(*be);
    const int N = 2048, C = 8, OC = 2048;  // out: 8 MiB of bf16
    const size_t out_bytes = size_t(N) * OC * be->act_bytes();
    Buffer inp = upload_act(*be, std::vector<float>(size_t(N) * C, 1.f));
    Buffer weight = upload_act(*be, std::vector<float>(size_t(C) * OC, 1.f));
    Buffer out = poisoned_act(*be, size_t(N) * OC);
    {
      const Buffer ballast = leave_free(*be, out_bytes / 2);
      ASSERT_LT(free_bytes(*be), out_bytes) << "the old scratch copies would have fit";
      be->matmul_forward(out.get(), inp.get(), weight.get(), nullptr, N, C, OC,
                         WeightLayout::kInOut);
      be->synchronize();
    }
    for (const float value : download_act(*be, out.get(), size_t(N) * OC)) {
      ASSERT_EQ(value, float(C)) << "each output is a sum of C ones";
    }
  });
}

// A product that adds into its output (beta 1: a dW after the window's first micro-batch) is
// timed on a scratch copy; without room for it the back end throws std::bad_alloc, which the
// trainer explains with its memory advice (it was a CUDA error naming cudaMalloc), and keeps
// working once there is room.
TEST(CudaSmallDevice, AnAlgorithmTimingWithoutRoomIsOutOfMemory) {
  ACCUM_REQUIRE_CUDA();
  const AlgorithmFile file;
  with_env("ACCUM_CUBLASLT_ALGOS", file.path.c_str(), [&] {
    auto be = make_backend(DeviceKind::kCuda);
    ACCUM_REQUIRE_FILLABLE_DEVICE(*be);
    const int N = 8, C = 512, OC = 2048;  // dweight: 4 MiB of fp32
    const size_t dweight_bytes = size_t(C) * OC * sizeof(float);
    Buffer inp = upload_act(*be, std::vector<float>(size_t(N) * C, 1.f));
    Buffer dout = upload_act(*be, std::vector<float>(size_t(N) * OC, 1.f));
    Buffer weight(*be, size_t(C) * OC * be->act_bytes());
    Buffer dweight(*be, dweight_bytes);  // zeroed
    auto add_dweight = [&] {
      be->matmul_backward(nullptr, dweight.f32(), nullptr, dout.get(), inp.get(), weight.get(), N,
                          C, OC, WeightLayout::kInOut, GradMode::kAdd);
    };
    {
      const Buffer ballast = leave_free(*be, dweight_bytes / 2);
      bool out_of_memory = false;
      try {
        add_dweight();
      } catch (const std::bad_alloc&) {
        out_of_memory = true;
      }
      EXPECT_TRUE(out_of_memory) << "timing a product with no room for its scratch output";
    }
    add_dweight();
    for (const float value : download_f32(*be, dweight.get(), size_t(C) * OC)) {
      ASSERT_EQ(value, float(N)) << "0 plus a sum of N ones, added once";
    }
  });
}

}  // namespace
}  // namespace accum::kernels::gpu_testing
