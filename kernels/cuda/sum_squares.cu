// kernels/cuda/sum_squares.cu — global squared L2 norm of the fp32 gradients (CPU twin:
// kernels/cpu/global_norm.cpp), for clipping and the grad_norm metric; and the device-side
// sum of a micro-batch's losses.
//
//   sum_squares: result = sum_i grads[i]^2      (double accumulation, returned to the host)
//   sum_add:     *acc  += sum_i x[i]            (double accumulation, stays on the device)
//
// Reproducible by construction: a FIXED grid (kBlocks x kThreads, independent of the
// device) where threads 0-2 first take the up to 3 values before the first 16-byte boundary,
// then thread j sums the 16-byte groups of 4 values j, j + stride, ... in order, and threads
// 0-2 take the up to 3 values after the last group. Each block reduces with a fixed shuffle tree
// into partial[block]; one block then adds the partials in the same tree. No atomics, so the same
// gradients at the same address alignment give the same bits on every run.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/ops.h"

namespace accum::kernels::cuda {
namespace {

constexpr int kBlocks = 512;
constexpr int kThreads = 512;

__global__ void sum_squares_partial_kernel(double* partial, const float* x, size_t n) {
  __shared__ double shared[kWarpSize];
  const size_t stride = static_cast<size_t>(kBlocks) * kThreads;
  const size_t thread = static_cast<size_t>(blockIdx.x) * kThreads + threadIdx.x;
  // Values before the first 16-byte boundary (a range that starts inside a group, e.g. a
  // ZeRO-1 shard), then whole groups, then the values after the last group.
  const size_t misaligned = (reinterpret_cast<uintptr_t>(x) & 15u) / sizeof(float);
  const size_t head = misaligned == 0 ? 0 : (n < 4 - misaligned ? n : 4 - misaligned);
  double acc = 0.0;
  if (thread < head) acc += static_cast<double>(x[thread]) * x[thread];
  const size_t groups = (n - head) / 4;
  const auto* x4 = reinterpret_cast<const float4*>(x + head);
  for (size_t i = thread; i < groups; i += stride) {
    ACCUM_VECTOR_ACCESS(x4 + i, 16);
    const float4 v = x4[i];
    acc += static_cast<double>(v.x) * v.x;
    acc += static_cast<double>(v.y) * v.y;
    acc += static_cast<double>(v.z) * v.z;
    acc += static_cast<double>(v.w) * v.w;
  }
  const size_t tail = head + groups * 4 + thread;
  if (tail < n) acc += static_cast<double>(x[tail]) * x[tail];
  const double total = block_sum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

__global__ void sum_squares_final_kernel(double* result, const double* partial) {
  __shared__ double shared[kWarpSize];
  const double total = block_sum(partial[threadIdx.x], shared);  // kBlocks == kThreads
  if (threadIdx.x == 0) *result = total;
}

static_assert(kBlocks == kThreads, "the final kernel reads one partial per thread");

// One block: thread j sums x[j], x[j + kThreads], ... in order, then the fixed shuffle tree.
__global__ void sum_add_kernel(double* acc, const float* x, size_t n) {
  __shared__ double shared[kWarpSize];
  double sum = 0.0;
  for (size_t i = threadIdx.x; i < n; i += kThreads) sum += x[i];
  const double total = block_sum(sum, shared);
  if (threadIdx.x == 0) *acc += total;
}

}  // namespace

double sum_squares(const float* grads, size_t n, DeviceScratch& scratch, cudaStream_t stream) {
  auto* partial =
      static_cast<double*>(scratch.get(ScratchSlot::kPartials, sizeof(double) * (kBlocks + 1)));
  sum_squares_partial_kernel<<<kBlocks, kThreads, 0, stream>>>(partial, grads, n);
  CUDA_CHECK_LAUNCH("sum_squares_partial_kernel");
  sum_squares_final_kernel<<<1, kThreads, 0, stream>>>(partial + kBlocks, partial);
  CUDA_CHECK_LAUNCH("sum_squares_final_kernel");
  double result = 0.0;
  CUDA_CHECK(
      cudaMemcpyAsync(&result, partial + kBlocks, sizeof(double), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return result;
}

void sum_add(double* acc, const float* x, size_t n, cudaStream_t stream) {
  sum_add_kernel<<<1, kThreads, 0, stream>>>(acc, x, n);
  CUDA_CHECK_LAUNCH("sum_add_kernel");
}

}  // namespace accum::kernels::cuda
