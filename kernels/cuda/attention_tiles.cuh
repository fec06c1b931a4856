// kernels/cuda/attention_tiles.cuh — the shared-memory tile loader both attention
// implementations (attention.cu, attention_mma.cu) stream their operands through.
#pragma once

#include "kernels/cuda/cuda_common.cuh"

namespace accum::kernels::cuda {

// tile[r][0..HS) = src row (row0 + r) for r < rows, zeros past row T; tile rows are
// `tile_stride` elements apart, src rows `src_stride`. `src` points at channel 0 of the head
// at time 0. 16-byte accesses: HS % 8 == 0 and every row start 16-byte aligned.
template <int HS>
__device__ inline void load_rows(bf16* tile, int tile_stride, const bf16* src, size_t src_stride,
                                 int row0, int rows, int T) {
  constexpr int kChunks = HS / 8;
  for (int c = threadIdx.x; c < rows * kChunks; c += blockDim.x) {
    const int r = c / kChunks, d = (c % kChunks) * 8;
    Packed128<bf16> value;
    if (row0 + r < T) {
      value = load128(src + static_cast<size_t>(row0 + r) * src_stride + d);
    } else {
      for (int k = 0; k < 8; ++k) value[k] = to_bf16(0.f);
    }
    store128(tile + r * tile_stride + d, value);
  }
}

}  // namespace accum::kernels::cuda
