// kernels/cuda/column_reduce.cuh — deterministic column sums over a (rows, cols) matrix,
// used by every parameter gradient that sums over rows (bias grads, LayerNorm weight/bias).
//
//   out_k[c] += sum_{r=0..rows-1} value_k(r, c)        k = 0..kOut-1
//
// Two stages, no atomics, so the same inputs give the same bits:
//   1. block (column tile of 32, row chunk of kRowsPerChunk) writes partial[k][chunk][c];
//      inside a block, 8 row lanes each sum a fixed row subset, then lane 0 adds the 8
//      lane sums in ascending order.
//   2. one thread per column adds the chunks in ascending order into out_k[c].
#pragma once

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/scratch.h"

namespace accum::kernels::cuda {

constexpr int kRowsPerChunk = 64;
constexpr int kRowLanes = 8;

// `Value` is a device functor: void operator()(int row, int col, float (&acc)[kOut]) adds
// value_k(row, col) into acc[k].
template <int kOut, typename Value>
__global__ void column_partials_kernel(float* partial, int rows, int cols, Value value) {
  __shared__ float lane_sums[kOut][kRowLanes][kWarpSize];
  const int c = blockIdx.x * kWarpSize + threadIdx.x;
  const int chunk = blockIdx.y;
  const int num_chunks = gridDim.y;
  float acc[kOut];
  for (int k = 0; k < kOut; ++k) acc[k] = 0.f;
  if (c < cols) {
    const int row_end = min(rows, (chunk + 1) * kRowsPerChunk);
    for (int r = chunk * kRowsPerChunk + threadIdx.y; r < row_end; r += kRowLanes) {
      value(r, c, acc);
    }
  }
  for (int k = 0; k < kOut; ++k) lane_sums[k][threadIdx.y][threadIdx.x] = acc[k];
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    for (int k = 0; k < kOut; ++k) {
      float sum = 0.f;
      for (int lane = 0; lane < kRowLanes; ++lane) sum += lane_sums[k][lane][threadIdx.x];
      partial[(static_cast<size_t>(k) * num_chunks + chunk) * cols + c] = sum;
    }
  }
}

template <int kOut>
struct ColumnOutputs {
  float* out[kOut];
};

template <int kOut>
__global__ void column_finalize_kernel(ColumnOutputs<kOut> outputs, const float* partial,
                                       int num_chunks, int cols) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  for (int k = 0; k < kOut; ++k) {
    float sum = 0.f;
    for (int chunk = 0; chunk < num_chunks; ++chunk) {
      sum += partial[(static_cast<size_t>(k) * num_chunks + chunk) * cols + c];
    }
    outputs.out[k][c] += sum;
  }
}

template <int kOut, typename Value>
void column_reduce_add(ColumnOutputs<kOut> outputs, int rows, int cols, Value value,
                       DeviceScratch& scratch, cudaStream_t stream) {
  const int num_chunks = ceil_div(rows, kRowsPerChunk);
  auto* partial = static_cast<float*>(scratch.get(
      ScratchSlot::kPartials, sizeof(float) * kOut * static_cast<size_t>(num_chunks) * cols));
  const dim3 block(kWarpSize, kRowLanes);
  const dim3 grid(ceil_div(cols, kWarpSize), num_chunks);
  column_partials_kernel<kOut><<<grid, block, 0, stream>>>(partial, rows, cols, value);
  CUDA_CHECK_LAUNCH("column_partials_kernel");
  column_finalize_kernel<kOut>
      <<<ceil_div(cols, 256), 256, 0, stream>>>(outputs, partial, num_chunks, cols);
  CUDA_CHECK_LAUNCH("column_finalize_kernel");
}

}  // namespace accum::kernels::cuda
