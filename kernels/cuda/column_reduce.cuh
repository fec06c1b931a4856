// kernels/cuda/column_reduce.cuh — deterministic column sums over a (rows, cols) matrix,
// used by every parameter gradient that sums over rows (bias grads, LayerNorm weight/bias).
//
//   out_k[c] += sum_{r=0..rows-1} value_k(r, c)        k = 0..kOut-1
//
// One kernel, two stages, summed in a fixed order, so the same inputs give the same bits:
//   1. partials: a block of 32 column lanes x 8 row lanes takes a chunk of kRowsPerChunk
//      rows and 32 kVec columns (kVec = 8 when cols % 8 == 0: each lane reads 16 bytes per
//      row); row lane y sums rows y, y + 8, ... of the chunk, then the block adds the 8 lane
//      sums in ascending order into partial[k][chunk][c].
//   2. finalize, by the last block of each column tile to finish (it counts arrivals with an
//      atomic; which block is last varies, the order of the sums does not): 32 columns x 8
//      chunk lanes at a time; chunk lane y sums chunks y, y + 8, ... in order, then the 8
//      lane sums are added in ascending order into out_k.
// The finalize once was a second kernel: ~5 us per call on an H200, mostly its launch, and
// a GPT-2 layer makes six of these calls per micro-step.
#pragma once

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/scratch.h"

namespace accum::kernels::cuda {

constexpr int kRowsPerChunk = 64;
constexpr int kRowLanes = 8;

template <int kOut>
struct ColumnOutputs {
  float* out[kOut];
};

// `Value` is a device functor: template <int W> void operator()(int row, int col,
// float (&acc)[kOut][W]) adds value_k(row, col + j) into acc[k][j] for j < W (W = 8: col is
// a multiple of 8 and the row's 8 values may be read as one 16-byte vector).
// `arrivals` holds one zeroed counter per column tile; the tile's last block zeroes it again.
template <int kOut, int kVec, typename Value>
__global__ void column_reduce_kernel(ColumnOutputs<kOut> outputs, float* partial,
                                     unsigned* arrivals, int rows, int cols, Value value) {
  constexpr int kTileCols = kWarpSize * kVec;
  __shared__ float lane_sums[kOut][kRowLanes][kTileCols];
  __shared__ bool last_block[1];  // an array: the SIMT emulator poisons arrays
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

  // Stage 2 in the tile's last block: this block's partials are made visible device-wide
  // before it counts itself, and the last block reads the others' past L1 (__ldcg).
  __threadfence();
  __syncthreads();
  if (thread == 0) last_block[0] = atomicAdd(&arrivals[blockIdx.x], 1u) == num_chunks - 1u;
  __syncthreads();
  if (!last_block[0]) return;
  __threadfence();
  for (int col0 = 0; col0 < kTileCols; col0 += kWarpSize) {
    const int c = tile0 + col0 + threadIdx.x;
    for (int k = 0; k < kOut; ++k) {
      float sum = 0.f;
      if (c < cols) {
        for (int ch = threadIdx.y; ch < num_chunks; ch += kRowLanes) {
          sum += __ldcg(&partial[(static_cast<size_t>(k) * num_chunks + ch) * cols + c]);
        }
      }
      lane_sums[k][threadIdx.y][threadIdx.x] = sum;
    }
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
      for (int k = 0; k < kOut; ++k) {
        float sum = 0.f;
        for (int lane = 0; lane < kRowLanes; ++lane) sum += lane_sums[k][lane][threadIdx.x];
        outputs.out[k][c] += sum;
      }
    }
    __syncthreads();  // lane_sums is refilled for the next 32 columns
  }
  if (thread == 0) arrivals[blockIdx.x] = 0u;  // ready for the next call
}

// `vector`: cols % 8 == 0 and the rows the functor reads are 16-byte aligned.
template <int kOut, typename Value>
void column_reduce_add(ColumnOutputs<kOut> outputs, int rows, int cols, Value value, bool vector,
                       DeviceScratch& scratch, cudaStream_t stream) {
  const int num_chunks = ceil_div(rows, kRowsPerChunk);
  auto* partial = static_cast<float*>(scratch.get(
      ScratchSlot::kPartials, sizeof(float) * kOut * static_cast<size_t>(num_chunks) * cols));
  const dim3 block(kWarpSize, kRowLanes);
  auto run = [&](auto kernel, int tile_cols) {
    const dim3 grid(ceil_div(cols, tile_cols), num_chunks);
    auto* arrivals =
        static_cast<unsigned*>(scratch.get(ScratchSlot::kArrivals, sizeof(unsigned) * grid.x));
    kernel<<<grid, block, 0, stream>>>(outputs, partial, arrivals, rows, cols, value);
    CUDA_CHECK_LAUNCH("column_reduce_kernel");
  };
  if (vector && cols % 8 == 0) {
    run(column_reduce_kernel<kOut, 8, Value>, kWarpSize * 8);
  } else {
    run(column_reduce_kernel<kOut, 1, Value>, kWarpSize);
  }
}

}  // namespace accum::kernels::cuda
