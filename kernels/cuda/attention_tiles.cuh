// kernels/cuda/attention_tiles.cuh — the shared-memory tile loaders the attention
// implementations (attention.cu, attention_mma.cu) stream their operands through:
// load_rows (plain loads and stores) and load_rows_async (cp.async, for double buffering);
// and row_dot_lanes, the backward's D = rowsum(dout * out) as every implementation sums it.
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

// Asynchronous copies (cp.async, sm_80+): 16 (or 4) bytes from global to shared memory that land
// in the background while the thread computes. commit closes a group of copies;
// wait<N> returns once at most the N newest groups are still in flight (the thread's own
// copies only: a __syncthreads after it makes the whole tile visible to the block).
__device__ inline void cp_async16(bf16* shared_dst, const bf16* global_src, bool zero_fill) {
#if defined(ACCUM_SIMT_EMULATION)
  ::accum::simt::cp_async16(shared_dst, global_src, zero_fill);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(shared_dst));
  const int src_bytes = zero_fill ? 0 : 16;  // 0: nothing is read, 16 zero bytes are written
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(global_src),
               "r"(src_bytes));
#else
  __trap();
#endif
}

// 4 bytes (one float), cp.async.ca: for statistics that travel with a step's tiles.
__device__ inline void cp_async4(float* shared_dst, const float* global_src, bool zero_fill) {
#if defined(ACCUM_SIMT_EMULATION)
  ::accum::simt::cp_async(shared_dst, global_src, 4, zero_fill);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(shared_dst));
  const int src_bytes = zero_fill ? 0 : 4;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(global_src),
               "r"(src_bytes));
#else
  __trap();
#endif
}

__device__ inline void cp_async_commit() {
#if defined(ACCUM_SIMT_EMULATION)
  ::accum::simt::cp_async_commit();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

template <int kPending>
__device__ inline void cp_async_wait() {
#if defined(ACCUM_SIMT_EMULATION)
  ::accum::simt::cp_async_wait(kPending);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
#endif
}

// load_rows as cp.async copies (no commit: the caller groups the tiles of one step), for
// tiles of kTileRows rows copied by the kThreads threads of a block; place(r, d) is where
// tile row r, columns d .. d + 7 (16 bytes) go. Everything the index arithmetic needs is
// known at compile time: each thread copies the same 16-byte column of every
// (kThreads / (HS / 8))-th row, so a copy costs one address add, one bounds test and the
// cp.async itself (the general loop's divisions cost ~25 instructions per copy).
template <int HS, int kTileRows, int kThreads, typename Place>
__device__ inline void copy_rows_async(Place place, const bf16* src, size_t src_stride, int row0,
                                       int T) {
  constexpr int kChunks = HS / 8;  // 16-byte pieces per row
  static_assert(kThreads % kChunks == 0, "every thread keeps one column of the tile");
  constexpr int kRowStep = kThreads / kChunks;        // rows between one thread's copies
  constexpr bool kExact = kTileRows % kRowStep == 0;  // else the last pass has idle threads
  const int r = threadIdx.x / kChunks, d = (threadIdx.x % kChunks) * 8;
  const bf16* from = src + static_cast<size_t>(row0 + r) * src_stride + d;
  ACCUM_UNROLL for (int i = 0; i < (kTileRows + kRowStep - 1) / kRowStep; ++i) {
    if (!kExact && r + i * kRowStep >= kTileRows) break;
    const bool inside = row0 + r + i * kRowStep < T;
    // A row past T is zero-filled: nothing is read, so any valid address (row 0) stands in.
    cp_async16(place(r + i * kRowStep, d), inside ? from + i * kRowStep * src_stride : src + d,
               !inside);
  }
}

// Into a row-major tile whose rows are tile_stride elements apart.
template <int HS, int kTileRows, int kThreads>
__device__ inline void load_rows_async(bf16* tile, int tile_stride, const bf16* src,
                                       size_t src_stride, int row0, int T) {
  copy_rows_async<HS, kTileRows, kThreads>(
      [=](int row, int col) { return tile + row * tile_stride + col; }, src, src_stride, row0, T);
}

// The dot product of one row of dout and out over a head (HS elements) by HS/8 lanes of a warp:
// lane `piece` of the row multiplies the row's elements piece*8 .. piece*8+7 (one 16-byte load
// of each) in order, then a fixed shuffle tree adds the row's lanes; every lane ends with the
// row's sum. The backward's D_i = dout_i . out_i: the delta kernel (attention.cu) and the dQ
// kernel (attention_mma.cu) both sum it here, so both give the same bits. Every lane of the
// warp must call it (the shuffles); a lane with !valid reads nothing and adds 0.
template <int HS>
__device__ inline float row_dot_lanes(const bf16* dout_piece, const bf16* out_piece, bool valid) {
  constexpr int kLanes = HS / 8;  // 1, 2, 4, 8 or 16: divides the warp
  float sum = 0.f;
  if (valid) {
    const Packed128<bf16> x = load128(dout_piece), y = load128(out_piece);
    for (int k = 0; k < 8; ++k) sum += to_f32(x[k]) * to_f32(y[k]);
  }
  for (int lanes = kLanes / 2; lanes > 0; lanes /= 2) {
    sum += __shfl_xor_sync(0xffffffffu, sum, lanes);
  }
  return sum;
}

}  // namespace accum::kernels::cuda
