// tests/simt/simt_test.cpp — the SIMT emulator itself (simt.h), and the CUDA back end's
// kernels under its three schedules:
//   * barriers, warp shuffles and the mma fragment layouts behave as on a GPU; shared
//     memory a block did not write reads as NaN;
//   * the checks a GPU would make fail as they would there (launch limits, dynamic shared
//     memory opt-in, deadlocked barriers, pointers that are not device memory), and
//     writes past the end of a buffer, which a GPU would not report, are caught;
//   * a kernel with a missing __syncthreads gives different bits under different
//     schedules, and a whole GPT-2 training step on the emulated CUDA back end gives the
//     same bits under all three (no kernel relies on an order a GPU does not guarantee);
//   * a GPT-2 micro-step on the CUDA back end never waits for the device, and the bias
//     gradient epilogue is taken when (and only when) it is asked for.
#include "tests/simt/simt.h"

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench/gpu/gpt2_step.h"
#include "kernels/backend.h"
#include "tests/simt/simt_runtime.h"

namespace accum::simt {
namespace {

// Restores the default schedule when a test ends.
struct ScheduleGuard {
  explicit ScheduleGuard(Schedule s) { set_schedule(s); }
  ~ScheduleGuard() { set_schedule(Schedule::kRoundRobin); }
};

constexpr Schedule kAllSchedules[] = {Schedule::kRoundRobin, Schedule::kLowestFirst,
                                      Schedule::kHighestFirst};

TEST(SimtEmulator, BlockBarrierOrdersSharedMemoryUnderEverySchedule) {
  for (Schedule s : kAllSchedules) {
    ScheduleGuard guard(s);
    std::vector<int> out(256, -1);
    launch_kernel({dim3(2), dim3(128), 128 * sizeof(int), nullptr}, nullptr, [&] {
      int* tile = reinterpret_cast<int*>(dynamic_shared());
      const int i = static_cast<int>(thread_idx().x);
      tile[i] = i * 10 + static_cast<int>(block_idx().x);
      sync_block();
      out[block_idx().x * 128 + i] = tile[(i + 37) % 128];  // another warp's element
    });
    for (int b = 0; b < 2; ++b) {
      for (int i = 0; i < 128; ++i) {
        ASSERT_EQ(out[b * 128 + i], ((i + 37) % 128) * 10 + b) << "block " << b << " thread " << i;
      }
    }
  }
}

TEST(SimtEmulator, MissingBarrierGivesDifferentResultsAcrossSchedules) {
  std::vector<std::vector<float>> results;
  for (Schedule s : {Schedule::kLowestFirst, Schedule::kHighestFirst}) {
    ScheduleGuard guard(s);
    std::vector<float> out(128);
    launch_kernel({dim3(1), dim3(128), 128 * sizeof(float), nullptr}, nullptr, [&] {
      float* tile = reinterpret_cast<float*>(dynamic_shared());
      const int i = static_cast<int>(thread_idx().x);
      tile[i] = static_cast<float>(i);
      // A warp-synchronous op lets the scheduler switch warps, as a GPU may at any time.
      (void)shfl_xor(0xffffffffu, 0.f, 1);
      out[i] = tile[(i + 64) % 128];  // BUG under test: no __syncthreads before the read
    });
    results.push_back(out);
  }
  // Warp 0 running ahead reads elements nobody wrote yet: the poison (NaN) shows.
  EXPECT_TRUE(std::isnan(results[0][0])) << "lowest-first: thread 0 read " << results[0][0];
  EXPECT_NE(std::memcmp(results[0].data(), results[1].data(), 128 * sizeof(float)), 0);
}

TEST(SimtEmulator, StaticSharedMemoryIsPoisonedForEveryBlock) {
  std::vector<float> seen(2, 0.f);
  launch_kernel({dim3(2), dim3(64), 0, nullptr}, nullptr, [&] {
    // What `__shared__ float tile[64];` becomes in a kernel compiled by cu_to_cpp.py.
    static thread_local float tile[64];
    fresh_shared(tile, sizeof(tile));
    if (thread_idx().x == 0) {
      seen[block_idx().x] = tile[5];
      tile[5] = 1.f;
    }
    sync_block();
  });
  EXPECT_TRUE(std::isnan(seen[0])) << seen[0];
  EXPECT_TRUE(std::isnan(seen[1])) << "block 1 read " << seen[1] << ", block 0's value";
}

// cp.async of 4 and 16 bytes: the destination keeps its old bytes until a wait covers the
// copy's group (wait<1> leaves the newest group in flight), zero fill writes zeros and reads
// nothing, and an address not aligned to the copy's size is refused as on a GPU.
TEST(SimtEmulator, CpAsyncLandsAtTheWaitThatCoversItsGroup) {
  std::vector<float> src = {1.f, 2.f, 3.f, 4.f, 5.f};
  std::vector<float> seen(12, -1.f);
  launch_kernel({dim3(1), dim3(1), 0, nullptr}, nullptr, [&] {
    alignas(16) float dst[8] = {9, 9, 9, 9, 9, 9, 9, 9};
    cp_async(&dst[0], &src[4], 4, false);  // group 0: one float
    cp_async(&dst[1], nullptr, 4, true);   //          a zero fill
    cp_async_commit();
    cp_async(&dst[4], &src[0], 16, false);  // group 1: four floats
    cp_async_commit();
    seen[0] = dst[0];  // nothing has landed yet
    cp_async_wait(1);  // group 0 only
    seen[1] = dst[0];
    seen[2] = dst[1];
    seen[3] = dst[4];
    cp_async_wait(0);
    for (int i = 0; i < 4; ++i) seen[4 + i] = dst[4 + i];
  });
  EXPECT_EQ(seen[0], 9.f);
  EXPECT_EQ(seen[1], 5.f);
  EXPECT_EQ(seen[2], 0.f);
  EXPECT_EQ(seen[3], 9.f);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(seen[4 + i], src[i]) << i;
}

TEST(SimtEmulatorDeathTest, CpAsyncRefusesAnAddressNotAlignedToItsSize) {
  EXPECT_DEATH(
      {
        alignas(16) float src[8] = {};
        launch_kernel({dim3(1), dim3(1), 0, nullptr}, nullptr, [&] {
          alignas(16) float dst[8];
          cp_async(&dst[1], &src[0], 16, false);
          cp_async_commit();
          cp_async_wait(0);
        });
      },
      "not aligned to the copy's size");
}

TEST(SimtEmulator, ShuffleXorExchangesBetweenLanes) {
  std::vector<int> out(64);
  launch_kernel({dim3(1), dim3(64), 0, nullptr}, nullptr, [&] {
    const int i = static_cast<int>(thread_idx().x);
    out[i] = shfl_xor(0xffffffffu, i * 3, 5);
  });
  for (int i = 0; i < 64; ++i) EXPECT_EQ(out[i], ((i % 32) ^ 5) * 3 + (i / 32) * 96) << i;
}

TEST(SimtEmulator, ShuffleReadsTheSourceLaneOfTheSameWarp) {
  std::vector<int> out(64);
  launch_kernel({dim3(1), dim3(64), 0, nullptr}, nullptr, [&] {
    const int i = static_cast<int>(thread_idx().x);
    out[i] = shfl(0xffffffffu, i * 3, (i * 7 + 3) % 32);  // a permutation of the lanes
  });
  for (int i = 0; i < 64; ++i) EXPECT_EQ(out[i], ((i * 7 + 3) % 32) * 3 + (i / 32) * 96) << i;
}

float bf16_round(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  bits &= 0xffff0000u;
  std::memcpy(&x, &bits, 4);
  return x;
}
uint16_t bf16_bits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  return static_cast<uint16_t>(bits >> 16);
}
uint32_t pack(float lo, float hi) { return bf16_bits(lo) | (uint32_t{bf16_bits(hi)} << 16); }

// The fragments are built here from the PTX ISA's table for mma.m16n8k16 (.bf16), written
// out element by element, independently of the emulator's decoding loops.
TEST(SimtEmulator, MmaComputesTheMatrixProductOfPtxFragments) {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist;
  float A[16][16], B[16][8], C[16][8];
  for (auto& row : A)
    for (float& x : row) x = bf16_round(dist(rng));
  for (auto& row : B)
    for (float& x : row) x = bf16_round(dist(rng));
  for (auto& row : C)
    for (float& x : row) x = dist(rng);
  float D[16][8];
  launch_kernel({dim3(1), dim3(32), 0, nullptr}, nullptr, [&] {
    const int lane = static_cast<int>(thread_idx().x), g = lane / 4, t = lane % 4;
    const uint32_t a[4] = {
        pack(A[g][2 * t], A[g][2 * t + 1]), pack(A[g + 8][2 * t], A[g + 8][2 * t + 1]),
        pack(A[g][2 * t + 8], A[g][2 * t + 9]), pack(A[g + 8][2 * t + 8], A[g + 8][2 * t + 9])};
    const uint32_t b[2] = {pack(B[2 * t][g], B[2 * t + 1][g]),
                           pack(B[2 * t + 8][g], B[2 * t + 9][g])};
    float d[4] = {C[g][2 * t], C[g][2 * t + 1], C[g + 8][2 * t], C[g + 8][2 * t + 1]};
    mma_m16n8k16_bf16(d, a, b);
    D[g][2 * t] = d[0];
    D[g][2 * t + 1] = d[1];
    D[g + 8][2 * t] = d[2];
    D[g + 8][2 * t + 1] = d[3];
  });
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 8; ++j) {
      double want = C[i][j];
      for (int k = 0; k < 16; ++k) want += double(A[i][k]) * B[k][j];
      EXPECT_NEAR(D[i][j], want, 1e-4) << "D[" << i << "][" << j << "]";
    }
  }
}

// Stream capture as a CUDA graph records it: kernels and memsets queued on the capturing
// stream do not run until the graph is launched, then run in order, with the arguments
// they were queued with, at every launch.
TEST(SimtEmulator, CapturedWorkRunsOnlyWhenTheGraphIsLaunched) {
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  int* counter = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&counter), sizeof(int)), cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(counter, 0, sizeof(int), stream), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(counter, 0, sizeof(int), stream), cudaSuccess);
  for (int add : {1, 10}) {  // `add` is taken as queued
    launch_kernel({dim3(1), dim3(1), 0, stream}, nullptr, [counter, add] { *counter += add; });
  }
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  int value = -1;
  ASSERT_EQ(cudaMemcpy(&value, counter, sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(value, 0) << "captured work ran at capture";
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int launch = 0; launch < 2; ++launch) {
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(&value, counter, sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(value, 11) << "launch " << launch;  // the memset, then both adds
  }
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(cudaFree(counter), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

// A stream forked from a capture (it waits for an event the capturing stream recorded) has
// its work held back and put into the graph where the capturing stream joins it (waits for an
// event recorded after it): in the graph it runs as late as the graph allows. So a join
// placed after an overwrite of what the forked work reads changes the result, as it may on a
// GPU where the two streams run concurrently.
int forked_read(bool join_before_overwrite) {
  cudaStream_t main_stream = nullptr, side = nullptr;
  cudaEvent_t fork = nullptr, done = nullptr;
  EXPECT_EQ(cudaStreamCreateWithFlags(&main_stream, cudaStreamNonBlocking), cudaSuccess);
  EXPECT_EQ(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking), cudaSuccess);
  EXPECT_EQ(cudaEventCreate(&fork), cudaSuccess);
  EXPECT_EQ(cudaEventCreate(&done), cudaSuccess);
  int* x = nullptr;  // x[0]: what the side stream reads; x[1]: what it copied
  EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&x), 2 * sizeof(int)), cudaSuccess);
  EXPECT_EQ(cudaStreamBeginCapture(main_stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  launch_kernel({dim3(1), dim3(1), 0, main_stream}, nullptr, [x] { x[0] = 1, x[1] = 0; });
  EXPECT_EQ(cudaEventRecord(fork, main_stream), cudaSuccess);
  EXPECT_EQ(cudaStreamWaitEvent(side, fork, 0), cudaSuccess);
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  EXPECT_EQ(cudaStreamIsCapturing(side, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusActive) << "the forked stream joined the capture";
  launch_kernel({dim3(1), dim3(1), 0, side}, nullptr, [x] { x[1] = x[0]; });
  EXPECT_EQ(cudaEventRecord(done, side), cudaSuccess);
  if (join_before_overwrite) {
    EXPECT_EQ(cudaStreamWaitEvent(main_stream, done, 0), cudaSuccess);
  }
  launch_kernel({dim3(1), dim3(1), 0, main_stream}, nullptr, [x] { x[0] = 5; });
  if (!join_before_overwrite) {
    EXPECT_EQ(cudaStreamWaitEvent(main_stream, done, 0), cudaSuccess);
  }
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(main_stream, &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  EXPECT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  EXPECT_EQ(cudaGraphLaunch(exec, main_stream), cudaSuccess);
  int copied = -1;
  EXPECT_EQ(cudaMemcpy(&copied, x + 1, sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
  // Outside the capture, an event last recorded in it may not be used (as on a GPU) until it
  // is recorded again.
  EXPECT_EQ(cudaStreamWaitEvent(main_stream, done, 0), cudaErrorCapturedEvent);
  EXPECT_EQ(cudaEventQuery(done), cudaErrorCapturedEvent);
  EXPECT_EQ(cudaGetLastError(), cudaErrorCapturedEvent);
  EXPECT_EQ(cudaEventRecord(done, side), cudaSuccess);
  EXPECT_EQ(cudaStreamWaitEvent(main_stream, done, 0), cudaSuccess);
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(cudaFree(x), cudaSuccess);
  for (cudaEvent_t e : {fork, done}) EXPECT_EQ(cudaEventDestroy(e), cudaSuccess);
  for (cudaStream_t st : {main_stream, side}) EXPECT_EQ(cudaStreamDestroy(st), cudaSuccess);
  return copied;
}

TEST(SimtEmulator, ForkedStreamWorkRunsAtItsJoinInTheGraph) {
  EXPECT_EQ(forked_read(true), 1) << "joined before the overwrite: the side read the first value";
  EXPECT_EQ(forked_read(false), 5) << "joined after the overwrite: the side ran at the join";
}

// A capture may not wait for an event recorded before it began: the emulator stops, as a GPU
// refuses the capture (cudaErrorStreamCaptureIsolation).
TEST(SimtEmulatorDeathTest, CaptureWaitingForWorkFromBeforeItFails) {
  EXPECT_DEATH(
      {
        cudaStream_t stream = nullptr;
        cudaEvent_t before = nullptr;
        (void)cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
        (void)cudaEventCreate(&before);
        (void)cudaEventRecord(before, stream);
        (void)cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
        (void)cudaStreamWaitEvent(stream, before, 0);
      },
      "an event recorded outside it");
}

// A fork that is never joined back invalidates the capture, as on a GPU.
TEST(SimtEmulator, ForkNotJoinedBackFailsTheCapture) {
  cudaStream_t main_stream = nullptr, side = nullptr;
  cudaEvent_t fork = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&main_stream, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&fork), cudaSuccess);
  int* x = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&x), sizeof(int)), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(main_stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(fork, main_stream), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(side, fork, 0), cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(x, 0, sizeof(int), side), cudaSuccess);
  cudaGraph_t graph = reinterpret_cast<cudaGraph_t>(&x);  // not null: must be cleared
  EXPECT_EQ(cudaStreamEndCapture(main_stream, &graph), cudaErrorStreamCaptureUnjoined);
  EXPECT_EQ(graph, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaErrorStreamCaptureUnjoined);
  // The streams are free again: a new capture works.
  ASSERT_EQ(cudaStreamBeginCapture(main_stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_EQ(cudaStreamEndCapture(main_stream, &graph), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(cudaFree(x), cudaSuccess);
  EXPECT_EQ(cudaEventDestroy(fork), cudaSuccess);
  for (cudaStream_t st : {main_stream, side}) EXPECT_EQ(cudaStreamDestroy(st), cudaSuccess);
}

// What a real capture refuses (waiting for the device, allocating) stops the emulator too.
TEST(SimtEmulatorDeathTest, WaitingForTheDeviceWhileCapturingFails) {
  EXPECT_DEATH(
      {
        cudaStream_t stream = nullptr;
        (void)cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
        (void)cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
        (void)cudaStreamSynchronize(stream);
      },
      "cudaStreamSynchronize while a stream captures");
}

TEST(SimtEmulator, BadLaunchConfigurationsFailLikeOnAGpu) {
  bool ran = false;
  (void)cudaGetLastError();
  launch_kernel({dim3(1), dim3(2048), 0, nullptr}, nullptr, [&] { ran = true; });
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_FALSE(ran);

  static int kernel_key;  // any address identifies a "kernel" for cudaFuncSetAttribute
  const size_t big = 64 << 10;
  launch_kernel({dim3(1), dim3(32), big, nullptr}, &kernel_key, [&] { ran = true; });
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue) << "64 KiB without the opt-in";
  EXPECT_FALSE(ran);
  ASSERT_EQ(cudaFuncSetAttribute(&kernel_key, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(big)),
            cudaSuccess);
  launch_kernel({dim3(1), dim3(32), big, nullptr}, &kernel_key, [&] { ran = true; });
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_TRUE(ran);
  EXPECT_EQ(
      cudaFuncSetAttribute(&kernel_key, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 << 10),
      cudaErrorInvalidValue)
      << "over the H100's 227 KiB";
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue) << "a failed runtime call is the last error";
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "and reading it clears it";
}

TEST(SimtEmulatorDeathTest, WarpOpWithExitedLanesIsReportedAsADeadlock) {
  EXPECT_DEATH(launch_kernel({dim3(1), dim3(64), 0, nullptr}, nullptr,
                             [&] {
                               sync_block();
                               // Lanes 1..31 of warp 0 exit; lane 0 waits for them forever.
                               if (thread_idx().x == 0) (void)shfl_xor(0xffffffffu, 1, 1);
                             }),
               "deadlock in block \\(0,0,0\\).*thread 0 waits at a warp-synchronous op");
}

TEST(SimtEmulatorDeathTest, MemcpyToHostMemoryAsDeviceIsRefused) {
  std::vector<char> host(64), other(64);
  EXPECT_DEATH((void)cudaMemcpy(host.data(), other.data(), 64, cudaMemcpyHostToDevice),
               "not device memory");
  void* device = nullptr;
  ASSERT_EQ(cudaMalloc(&device, 64), cudaSuccess);
  EXPECT_DEATH((void)cudaMemcpy(device, other.data(), 65, cudaMemcpyHostToDevice),
               "run past the end");
  EXPECT_EQ(cudaFree(device), cudaSuccess);
}

TEST(SimtEmulatorDeathTest, KernelWritingPastTheEndOfABufferIsCaughtAtLaunch) {
  EXPECT_DEATH(
      {
        void* device = nullptr;
        (void)cudaMalloc(&device, 100);
        auto* bytes = static_cast<unsigned char*>(device);
        launch_kernel({dim3(1), dim3(128), 0, nullptr}, nullptr,
                      [&] { bytes[thread_idx().x] = 0; });  // 28 bytes too many
      },
      "written past the end of a 100-byte allocation, at byte 100");
}

// ACCUM_CUBLASLT_BGRAD=1 makes the CUDA back end ask cuBLASLt for the BGRADA epilogue in the
// weight-gradient GEMM (and not otherwise), and the bias gradient it adds (kAdd) or writes
// (kWrite) is dout's column sums. (CudaOps.MatmulBiasGradientFromTheGemmEpilogue compares the
// whole op to the CPU.)
// `misaligned`: dbias 4 bytes past a 16-byte boundary, where kWrite goes through scratch.
std::vector<float> bias_gradient_on_cuda(bool bgrad, kernels::GradMode mode, int* bgrad_calls,
                                         bool misaligned = false) {
  if (bgrad) setenv("ACCUM_CUBLASLT_BGRAD", "1", 1);
  auto backend = kernels::make_backend(kernels::DeviceKind::kCuda, 0);
  unsetenv("ACCUM_CUBLASLT_BGRAD");
  const int N = 24, C = 16, OC = 40;
  std::vector<__nv_bfloat16> dout(N * OC), inp(N * C), weight(C * OC);
  for (int i = 0; i < N * OC; ++i) dout[i] = __float2bfloat16(0.25f * ((i * 7) % 13) - 1.5f);
  for (int i = 0; i < N * C; ++i) inp[i] = __float2bfloat16(0.125f * ((i * 5) % 11) - 0.5f);
  for (int i = 0; i < C * OC; ++i) weight[i] = __float2bfloat16(0.0625f * (i % 9));
  auto upload = [&](const auto& host) {
    void* p = backend->alloc(host.size() * sizeof(host[0]));
    backend->upload(p, host.data(), host.size() * sizeof(host[0]));
    return p;
  };
  void* dout_d = upload(dout);
  void* inp_d = upload(inp);
  void* weight_d = upload(weight);
  auto* dweight = static_cast<float*>(backend->alloc(sizeof(float) * C * OC));
  // dbias starts at 1 (kAdd must add to it) or NaN (kWrite must replace it).
  std::vector<float> start(OC + 1, mode == kernels::GradMode::kAdd ? 1.f : NAN);
  auto* dbias_alloc = static_cast<float*>(upload(start));
  float* dbias = dbias_alloc + (misaligned ? 1 : 0);
  const int before = matmul_calls_with_epilogue(CUBLASLT_EPILOGUE_BGRADA);
  backend->matmul_backward(nullptr, dweight, dbias, dout_d, inp_d, weight_d, N, C, OC,
                           kernels::WeightLayout::kInOut, mode);
  *bgrad_calls = matmul_calls_with_epilogue(CUBLASLT_EPILOGUE_BGRADA) - before;
  std::vector<float> result(OC);
  backend->download(result.data(), dbias, sizeof(float) * OC);
  for (void* p :
       {dout_d, inp_d, weight_d, static_cast<void*>(dweight), static_cast<void*>(dbias_alloc)}) {
    backend->release(p);
  }
  return result;
}

TEST(SimtEmulator, BiasGradientEpilogueIsTakenOnlyWhenAskedFor) {
  for (kernels::GradMode mode : {kernels::GradMode::kAdd, kernels::GradMode::kWrite}) {
    for (bool misaligned : {false, true}) {
      SCOPED_TRACE(std::string(mode == kernels::GradMode::kAdd ? "kAdd" : "kWrite") +
                   (misaligned ? ", dbias not 16-byte aligned" : ""));
      int fused_calls = -1, plain_calls = -1;
      const std::vector<float> fused = bias_gradient_on_cuda(true, mode, &fused_calls, misaligned);
      const std::vector<float> plain = bias_gradient_on_cuda(false, mode, &plain_calls, misaligned);
      EXPECT_EQ(fused_calls, 1);
      EXPECT_EQ(plain_calls, 0);
      for (int c = 0; c < 40; ++c) {
        // Every value is a multiple of 1/4: the sums are exact.
        float want = mode == kernels::GradMode::kAdd ? 1.f : 0.f;
        for (int r = 0; r < 24; ++r) want += 0.25f * (((r * 40 + c) * 7) % 13) - 1.5f;
        EXPECT_EQ(fused[c], want) << "column " << c;
        EXPECT_EQ(plain[c], want) << "column " << c;
      }
    }
  }
}

// The model's promise (daemon/worker/model/gpt2.h): a micro-step never waits for the
// device. After one warm-up micro-step (cuBLASLt plans, scratch and staging sized), more
// micro-steps make no stream or device synchronization, no device->host copy and no
// host->device copy from pageable memory; reading the loss afterwards is one download.
TEST(SimtSchedules, MicroStepsNeverWaitForTheDevice) {
  auto backend = kernels::make_backend(kernels::DeviceKind::kCuda, 0);
  const bench::Gpt2Config config{
      .n_layer = 1, .n_head = 2, .d_model = 64, .vocab = 80, .max_seq = 64};
  const int B = 2, T = 64;
  bench::Gpt2Step model(*backend, config, B, T, 3);
  std::mt19937_64 rng(4);
  std::uniform_int_distribution<int32_t> token(0, config.vocab - 1);
  std::vector<int32_t> tokens(B * T + 1);
  for (auto& t : tokens) t = token(rng);
  const float dloss = 1.f / (4 * B * T);
  model.begin_window();
  model.micro_step(tokens, dloss);  // warm-up
  const HostWaits before = host_waits();
  for (int micro = 0; micro < 3; ++micro) model.micro_step(tokens, dloss);
  const HostWaits after = host_waits();
  EXPECT_EQ(after.stream_syncs - before.stream_syncs, 0);
  EXPECT_EQ(after.device_to_host - before.device_to_host, 0);
  EXPECT_EQ(after.pageable_to_device - before.pageable_to_device, 0);
  const float loss = model.take_mean_loss();
  EXPECT_EQ(host_waits().device_to_host - after.device_to_host, 1);
  EXPECT_NEAR(loss, std::log(static_cast<float>(config.vocab)), 0.5f);
}

// One optimizer step (K = 2 micro-batches) of a tiny GPT-2 on the emulated CUDA back end:
// the weights after it, as bits.
std::vector<float> one_training_step() {
  auto backend = kernels::make_backend(kernels::DeviceKind::kCuda, 0);
  // Head size 32: the tensor-core attention.
  const bench::Gpt2Config config{
      .n_layer = 1, .n_head = 2, .d_model = 64, .vocab = 80, .max_seq = 80};
  const int B = 2, T = 80;  // 80 > 64: two query/key tiles, a ragged last one
  bench::Gpt2Step model(*backend, config, B, T, 5);
  std::mt19937_64 rng(11);
  std::uniform_int_distribution<int32_t> token(0, config.vocab - 1);
  model.begin_window();
  for (int micro = 0; micro < 2; ++micro) {
    std::vector<int32_t> tokens(B * T + 1);
    for (auto& t : tokens) t = token(rng);
    model.micro_step(tokens, 1.f / (2 * B * T));
  }
  model.optimizer_step(1, 1e-2f);
  return model.master_weights();
}

TEST(SimtSchedules, TrainingStepOnTheCudaBackEndIsTheSameUnderEverySchedule) {
  std::vector<float> reference;
  for (Schedule s : kAllSchedules) {
    ScheduleGuard guard(s);
    const auto weights = one_training_step();
    if (reference.empty()) {
      reference = weights;
      continue;
    }
    ASSERT_EQ(weights.size(), reference.size());
    size_t differing = 0;
    for (size_t i = 0; i < weights.size(); ++i) {
      differing += std::memcmp(&weights[i], &reference[i], sizeof(float)) != 0;
    }
    EXPECT_EQ(differing, 0u) << "schedule " << static_cast<int>(s) << " changed " << differing
                             << " of " << weights.size() << " weights: a kernel depends on the "
                             << "order its threads run in (a missing __syncthreads?)";
  }
}

}  // namespace
}  // namespace accum::simt
