// kernels/cuda/column_reduce.cuh — deterministic column sums over a (rows, cols) matrix,
// used by every parameter gradient that sums over rows (bias grads, LayerNorm weight/bias).
//
//   out_k[c] += sum_{r=0..rows-1} value_k(r, c)        k = 0..kOut-1
//
// Two stages, no atomics, so the same inputs give the same bits:
//   1. column_partials: a block of 32 column lanes x 8 row lanes takes a chunk of
//      kRowsPerChunk rows and 32 kVec columns (kVec = 8 when cols % 8 == 0: each lane reads
//      16 bytes per row); row lane y sums rows y, y + 8, ... of the chunk, then the block
//      adds the 8 lane sums in ascending order into partial[k][chunk][c].
//   2. column_finalize: 32 columns x 8 chunk lanes per block; chunk lane y sums chunks
//      y, y + 8, ... in order, then the 8 lane sums are added in ascending order into out_k.
// Both stages read with every thread busy (the finalize once ran one thread per column
// over all chunks: 11 us per call for 768 columns, 128 chunks, on an H200).
#pragma once

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/scratch.h"

namespace accum::kernels::cuda {

constexpr int kRowsPerChunk = 64;
constexpr int kRowLanes = 8;

// `Value` is a device functor: template <int W> void operator()(int row, int col,
// float (&acc)[kOut][W]) adds value_k(row, col + j) into acc[k][j] for j < W (W = 8: col is
// a multiple of 8 and the row's 8 values may be read as one 16-byte vector).
template <int kOut, int kVec, typename Value>
__global__ void column_partials_kernel(float* partial, int rows, int cols, Value value) {
  constexpr int kTileCols = kWarpSize * kVec;
  __shared__ float lane_sums[kOut][kRowLanes][kTileCols];
  const int tile0 = blockIdx.x * kTileCols;
  const int c0 = tile0 + threadIdx.x * kVec;
  const int chunk = blockIdx.y;
  const int num_chunks = gridDim.y;
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
  const int thread = threadIdx.y * kWarpSize + threadIdx.x;
  for (int col = thread; col < kTileCols; col += kWarpSize * kRowLanes) {
    if (tile0 + col >= cols) break;
    for (int k = 0; k < kOut; ++k) {
      float sum = 0.f;
      for (int lane = 0; lane < kRowLanes; ++lane) sum += lane_sums[k][lane][col];
      partial[(static_cast<size_t>(k) * num_chunks + chunk) * cols + tile0 + col] = sum;
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
  __shared__ float lane_sums[kOut][kRowLanes][kWarpSize];
  const int c = blockIdx.x * kWarpSize + threadIdx.x;
  for (int k = 0; k < kOut; ++k) {
    float sum = 0.f;
    if (c < cols) {
      for (int chunk = threadIdx.y; chunk < num_chunks; chunk += kRowLanes) {
        sum += partial[(static_cast<size_t>(k) * num_chunks + chunk) * cols + c];
      }
    }
    lane_sums[k][threadIdx.y][threadIdx.x] = sum;
  }
  __syncthreads();
  if (threadIdx.y != 0 || c >= cols) return;
  for (int k = 0; k < kOut; ++k) {
    float sum = 0.f;
    for (int lane = 0; lane < kRowLanes; ++lane) sum += lane_sums[k][lane][threadIdx.x];
    outputs.out[k][c] += sum;
  }
}

// Stage 2 alone, for kernels that write stage 1's partial[k][chunk][c] themselves (the
// LayerNorm backward sums its parameter gradients while it computes dinp).
template <int kOut>
void column_finalize_add(ColumnOutputs<kOut> outputs, const float* partial, int num_chunks,
                         int cols, cudaStream_t stream) {
  const dim3 block(kWarpSize, kRowLanes);
  column_finalize_kernel<kOut>
      <<<ceil_div(cols, kWarpSize), block, 0, stream>>>(outputs, partial, num_chunks, cols);
  CUDA_CHECK_LAUNCH("column_finalize_kernel");
}

// `vector`: cols % 8 == 0 and the rows the functor reads are 16-byte aligned.
template <int kOut, typename Value>
void column_reduce_add(ColumnOutputs<kOut> outputs, int rows, int cols, Value value, bool vector,
                       DeviceScratch& scratch, cudaStream_t stream) {
  const int num_chunks = ceil_div(rows, kRowsPerChunk);
  auto* partial = static_cast<float*>(scratch.get(
      ScratchSlot::kPartials, sizeof(float) * kOut * static_cast<size_t>(num_chunks) * cols));
  const dim3 block(kWarpSize, kRowLanes);
  if (vector && cols % 8 == 0) {
    const dim3 grid(ceil_div(cols, kWarpSize * 8), num_chunks);
    column_partials_kernel<kOut, 8><<<grid, block, 0, stream>>>(partial, rows, cols, value);
  } else {
    const dim3 grid(ceil_div(cols, kWarpSize), num_chunks);
    column_partials_kernel<kOut, 1><<<grid, block, 0, stream>>>(partial, rows, cols, value);
  }
  CUDA_CHECK_LAUNCH("column_partials_kernel");
  column_finalize_add<kOut>(outputs, partial, num_chunks, cols, stream);
}

}  // namespace accum::kernels::cuda
