// kernels/cuda/mma.cuh — warp-level bf16 tensor-core products (mma.sync m16n8k16, fp32
// accumulate; sm_80 and later) and the register fragments they take, for hand-written
// kernels whose operands live in shared-memory tiles (attention_mma.cu).
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16" with .bf16): in a warp,
// lane = 4 g + t (g = lane / 4 in 0..7, t = lane % 4 in 0..3); a .b32 register holds two
// bf16, the lower-indexed element in the low half.
//   A (16x16, row-major) a[4]: a[0] = A[g][2t..2t+1]    a[1] = A[g+8][2t..2t+1]
//                             a[2] = A[g][2t+8..2t+9]  a[3] = A[g+8][2t+8..2t+9]
//   B (16x8)            b[2]: b[0] = B[2t..2t+1][g]    b[1] = B[2t+8..2t+9][g]
//   C/D (16x8, fp32)    c[4]: c[0..1] = C[g][2t..2t+1] c[2..3] = C[g+8][2t..2t+1]
// So the accumulators of two neighbouring 16x8 tiles, rounded to bf16, ARE the A fragment
// of the 16x16 block they form (acc_to_a): a softmax's P goes straight into the next product.
//
// Tiles are row-major bf16 in shared memory with a row stride of `stride` elements, a
// multiple of 8 (16-byte rows for ldmatrix); with stride = width + 8 the eight rows of an
// 8x8 matrix fall in distinct banks.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace accum::kernels::cuda::mma {

using bf16 = __nv_bfloat16;

__device__ inline int lane_g() { return (threadIdx.x % 32) / 4; }
__device__ inline int lane_t() { return threadIdx.x % 4; }

__device__ inline uint32_t pack(bf16 lo, bf16 hi) {
  return static_cast<uint32_t>(__bfloat16_as_ushort(lo)) |
         (static_cast<uint32_t>(__bfloat16_as_ushort(hi)) << 16);
}
__device__ inline uint32_t pack(float lo, float hi) {
  return pack(__float2bfloat16_rn(lo), __float2bfloat16_rn(hi));
}

// d += a b for one 16x8x16 product.
__device__ inline void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(ACCUM_SIMT_EMULATION)
  ::accum::simt::mma_m16n8k16_bf16(d, a, b);  // tests/simt: the same kernels run on the CPU
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();  // bf16 mma needs sm_80; ACCUM_CUDA_ARCHS must not go below 80
#endif
}

// ldmatrix.x4: lanes 8 i .. 8 i + 7 pass the addresses of rows 0..7 of 8x8 matrix i (16
// bytes each, 16-byte aligned, in shared memory); register i of lane 4 g + t receives row g,
// elements 2t, 2t + 1 of matrix i, or with kTrans column g, rows 2t, 2t + 1. One
// instruction replaces four (or, transposed, eight) shared-memory loads per lane.
template <bool kTrans>
__device__ inline void ldmatrix_x4(uint32_t (&r)[4], const bf16* row) {
#if defined(ACCUM_SIMT_EMULATION)
  ::accum::simt::ldmatrix_x4_b16(r, row, kTrans);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(row));
  if constexpr (kTrans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
  }
#else
  __trap();
#endif
}

__device__ inline int lane_id() { return threadIdx.x % 32; }

// A = tile[row0 .. row0+15][col0 .. col0+15]: matrices (rows 0-7 | 8-15) x (cols 0-7 | 8-15)
// in the order a[0..3] wants them.
__device__ inline void load_a(uint32_t (&a)[4], const bf16* tile, int stride, int row0, int col0) {
  const int l = lane_id();
  ldmatrix_x4<false>(a, tile + (row0 + l % 8 + ((l / 8) & 1) * 8) * stride + col0 + (l / 16) * 8);
}

// Two B fragments, for columns n0..n0+7 (lo) and n0+8..n0+15 (hi), k0..k0+15:
// B[k][n] = tile[n0 + n][k0 + k]: the tile's rows are B's columns (K for S = Q K^T).
__device__ inline void load_b2_rows_n(uint32_t (&lo)[2], uint32_t (&hi)[2], const bf16* tile,
                                      int stride, int n0, int k0) {
  const int l = lane_id();
  uint32_t r[4];
  ldmatrix_x4<false>(r, tile + (n0 + l % 8 + (l / 16) * 8) * stride + k0 + ((l / 8) & 1) * 8);
  lo[0] = r[0], lo[1] = r[1], hi[0] = r[2], hi[1] = r[3];
}

// Likewise with B[k][n] = tile[k0 + k][n0 + n]: the tile's rows are B's rows (V for O = P V).
__device__ inline void load_b2_rows_k(uint32_t (&lo)[2], uint32_t (&hi)[2], const bf16* tile,
                                      int stride, int k0, int n0) {
  const int l = lane_id();
  uint32_t r[4];
  ldmatrix_x4<true>(r, tile + (k0 + l % 8 + ((l / 8) & 1) * 8) * stride + n0 + (l / 16) * 8);
  lo[0] = r[0], lo[1] = r[1], hi[0] = r[2], hi[1] = r[3];
}

// The A fragment of the 16x16 block formed by accumulator tiles lo (columns 0..7) and hi
// (columns 8..15), rounded to bf16.
__device__ inline void acc_to_a(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack(lo[0], lo[1]);
  a[1] = pack(lo[2], lo[3]);
  a[2] = pack(hi[0], hi[1]);
  a[3] = pack(hi[2], hi[3]);
}

}  // namespace accum::kernels::cuda::mma
