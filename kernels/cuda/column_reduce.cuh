// kernels/cuda/column_reduce.cuh — deterministic column sums over a (rows, cols) matrix,
// used by every parameter gradient that sums over rows (bias grads, LayerNorm weight/bias).
//
//   out_k[c] (+)= sum_{r=0..rows-1} value_k(r, c)        k = 0..kOut-1, += for GradMode::kAdd
//
// Two stages, no atomics, so the same inputs give the same bits:
//   1. column_partials: a block of 32 column lanes x 8 row lanes takes a chunk of
//      kRowsPerChunk rows and 32 kVec columns (kVec = 8 when cols % 8 == 0: each lane reads
//      16 bytes per row); row lane y sums rows y, y + 8, ... of the chunk, then the block
//      adds the 8 lane sums in ascending order into partial[k][chunk][c].
//   2. column_finalize: a warp per column; lane l sums chunks l, l + 32, ... in order, then
//      a fixed shuffle tree adds the 32 lane sums, and lane 0 writes or adds them to out_k.
// Both stages read with every thread busy (the finalize once ran one thread per column
// over all chunks: 11 us per call for 768 columns, 128 chunks, on an H200; then 32 columns
// x 8 chunk lanes per block: 4.9 us).
#pragma once

#include <algorithm>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/scratch.h"

namespace accum::kernels::cuda {

constexpr int kRowsPerChunk = 64;
constexpr int kRowLanes = 8;
constexpr int kMaxGridY = 65535;  // CUDA's limit on gridDim.y

// `Value` is a device functor: template <int W> void operator()(int row, int col,
// float (&acc)[kOut][W]) adds value_k(row, col + j) into acc[k][j] for j < W (W = 8: col is
// a multiple of 8 and the row's 8 values may be read as one 16-byte vector).
template <int kOut, int kVec, typename Value>
__global__ void column_partials_kernel(float* partial, int rows, int cols, int num_chunks,
                                       Value value) {
  constexpr int kTileCols = kWarpSize * kVec;
  __shared__ float lane_sums[kOut][kRowLanes][kTileCols];
  const int tile0 = blockIdx.x * kTileCols;
  const int c0 = tile0 + threadIdx.x * kVec;
  const int thread = threadIdx.y * kWarpSize + threadIdx.x;
  // One chunk per block, unless there are more chunks than gridDim.y may have (65535:
  // 4.2M rows); then a block takes every gridDim.y-th chunk, each summed as alone.
  for (int chunk = blockIdx.y; chunk < num_chunks; chunk += gridDim.y) {
    float acc[kOut][kVec];
    for (int k = 0; k < kOut; ++k)
      for (int j = 0; j < kVec; ++j) acc[k][j] = 0.f;
    if (c0 < cols) {
      const int row_end = min(rows, (chunk + 1) * kRowsPerChunk);
      for (int r = chunk * kRowsPerChunk + threadIdx.y; r < row_end; r += kRowLanes) {
        value.template operator()<kVec>(r, c0, acc);
      }
    }
    for (int k = 0; k < kOut; ++k)
      for (int j = 0; j < kVec; ++j) lane_sums[k][threadIdx.y][threadIdx.x * kVec + j] = acc[k][j];
    __syncthreads();
    for (int col = thread; col < kTileCols; col += kWarpSize * kRowLanes) {
      if (tile0 + col >= cols) break;
      for (int k = 0; k < kOut; ++k) {
        float sum = 0.f;
        for (int lane = 0; lane < kRowLanes; ++lane) sum += lane_sums[k][lane][col];
        partial[(static_cast<size_t>(k) * num_chunks + chunk) * cols + tile0 + col] = sum;
      }
    }
    __syncthreads();  // the next chunk rewrites lane_sums
  }
}

template <int kOut>
struct ColumnOutputs {
  float* out[kOut];
};

// Stage 2: one warp per column, lane l summing chunks l, l + 32, ... in order, then a fixed
// shuffle tree over the 32 lanes. Every load of every output is independent, so a thread has
// all of its (num_chunks / 32 per output) loads in flight at once: with 8 chunk lanes per
// column and the outputs one after the other, the kernel waited on L2 about 8 times in a row
// (~5 us per call on an H200 for 128 chunks).
constexpr int kFinalizeColumns = 8;  // warps (columns) per block

template <int kOut>
__global__ void __launch_bounds__(kWarpSize* kFinalizeColumns)
    column_finalize_kernel(ColumnOutputs<kOut> outputs, const float* partial, int num_chunks,
                           int cols, bool add) {
  const int c = blockIdx.x * kFinalizeColumns + threadIdx.y;
  if (c >= cols) return;  // a whole warp: the shuffles below see no exited lane
  float sum[kOut];
  for (int k = 0; k < kOut; ++k) sum[k] = 0.f;
  for (int chunk = threadIdx.x; chunk < num_chunks; chunk += kWarpSize) {
    for (int k = 0; k < kOut; ++k) {
      sum[k] += partial[(static_cast<size_t>(k) * num_chunks + chunk) * cols + c];
    }
  }
  for (int k = 0; k < kOut; ++k) {
    const float total = warp_sum(sum[k]);
    if (threadIdx.x == 0) outputs.out[k][c] = add ? outputs.out[k][c] + total : total;
  }
}

// Stage 2 alone, for kernels that write stage 1's partial[k][chunk][c] themselves (the
// LayerNorm backward sums its parameter gradients while it computes dinp).
template <int kOut>
void column_finalize(ColumnOutputs<kOut> outputs, const float* partial, int num_chunks, int cols,
                     GradMode mode, cudaStream_t stream) {
  const dim3 block(kWarpSize, kFinalizeColumns);
  column_finalize_kernel<kOut><<<ceil_div(cols, kFinalizeColumns), block, 0, stream>>>(
      outputs, partial, num_chunks, cols, mode == GradMode::kAdd);
  CUDA_CHECK_LAUNCH("column_finalize_kernel");
}

// `vector`: cols % 8 == 0 and the rows the functor reads are 16-byte aligned.
template <int kOut, typename Value>
void column_reduce(ColumnOutputs<kOut> outputs, int rows, int cols, Value value, bool vector,
                   GradMode mode, DeviceScratch& scratch, cudaStream_t stream) {
  const int num_chunks = ceil_div(rows, kRowsPerChunk);
  auto* partial = static_cast<float*>(scratch.get(
      ScratchSlot::kPartials, sizeof(float) * kOut * static_cast<size_t>(num_chunks) * cols));
  const dim3 block(kWarpSize, kRowLanes);
  const int grid_chunks = std::min(num_chunks, kMaxGridY);
  if (vector && cols % 8 == 0) {
    const dim3 grid(ceil_div(cols, kWarpSize * 8), grid_chunks);
    column_partials_kernel<kOut, 8>
        <<<grid, block, 0, stream>>>(partial, rows, cols, num_chunks, value);
  } else {
    const dim3 grid(ceil_div(cols, kWarpSize), grid_chunks);
    column_partials_kernel<kOut, 1>
        <<<grid, block, 0, stream>>>(partial, rows, cols, num_chunks, value);
  }
  CUDA_CHECK_LAUNCH("column_partials_kernel");
  column_finalize<kOut>(outputs, partial, num_chunks, cols, mode, stream);
}

}  // namespace accum::kernels::cuda
