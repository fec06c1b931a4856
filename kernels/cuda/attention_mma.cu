// kernels/cuda/attention_mma.cu — the tensor-core version of the fused causal attention of
// attention.cu (same formulas, same saved lse, same deterministic ownership; CPU twin
// kernels/cpu/attention.cpp). Head sizes 16, 32, 64 and 128; attention.cu dispatches here.
//
// Every product runs as bf16 mma.sync m16n8k16 with fp32 accumulation (mma.cuh); softmax,
// lse, D and the online rescaling stay in fp32; P and dS are rounded to bf16 only as
// inputs of the next product (as FlashAttention-2 does).
//
// A block is 4 warps and owns 64 rows (queries in the forward and dQ kernels, keys in the
// dK/dV kernel); each warp owns 16 of them and keeps their accumulators in registers. The
// other operand streams through shared-memory tiles of kInner rows:
//   forward   (b,h, 64 queries): S = Q K^T, online softmax, O += P V over key tiles <= diagonal
//   dK/dV     (b,h, 64 keys):    S^T = K Q^T, dP^T = V dO^T, P^T = exp(S^T - lse),
//                                dS^T = P^T (dP^T - D); dV = sum P^T dO, dK = sum dS^T Q
//                                over query tiles >= diagonal
//   dQ        (b,h, 64 queries): D = rowsum(dO * O) (written for dK/dV, which runs next),
//                                S = Q K^T, dP = dO V^T, dS = P (dP - D); dQ = sum dS K
// Every output element is summed by one thread in a fixed order and written once (dqkv is
// not read): no atomics, bit-identical reruns. dK/dQ are scaled by 1/sqrt(hs) at the end.
// Speed: fragments come from shared memory through ldmatrix (one instruction for four
// 8x8 matrices); the streamed tiles are double-buffered with cp.async, so the next step's
// tiles land while this step computes; the causal mask is applied only in tiles that reach
// the diagonal or T; every grid runs its longest blocks first (block_task).
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string>

#include "kernels/cuda/attention_mma.h"
#include "kernels/cuda/attention_tiles.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/mma.cuh"

namespace accum::kernels::cuda {
namespace {

constexpr int kRows = 64;           // rows a block owns
constexpr int kWarps = kRows / 16;  // one warp per 16 rows
constexpr int kThreads = kWarps * kWarpSize;

// The order blocks start in. Every kernel here has a 1-D grid of heads x tiles blocks
// (heads = B * NH, tiles = ceil(T / 64)); the block scheduler starts them in blockIdx.x
// order (what GPUs do, though CUDA does not promise it), and block_task maps that launch
// index to the (b, h) and the length rank (0 = the longest block) the block computes.
// Causal blocks range from 1 to T/64 tiles of work. Heads go in groups of `group`: within
// a group every head's longest block launches first, then every head's next-longest, ...,
// then the next group (the "longest processing time first" rule within a group), so the
// short blocks fill the end of the kernel instead of a few long ones running alone on an
// otherwise idle GPU. group = every head (the default) gives 92-97% of the block slots busy
// in a list-scheduling model of the H100 (bench/gpu/block_schedule.py); group = 1 is the
// order up to RESULTS 4.9 (each head's blocks longest to shortest, then the next head's:
// 72-77% in the model, and ncu saw the SMs idle 13-16% of each kernel). Smaller groups keep
// fewer heads' K and V in L2 at once (ACCUM_ATTENTION_HEAD_GROUP; see attention_mma.h).
// Each block computes the same tile the same way in every order: the same bits.
struct BlockOrder {
  int heads, tiles, group;
};
struct BlockTask {
  int bh, rank;
};
__device__ inline BlockTask block_task(const BlockOrder& order) {
  const int launch = static_cast<int>(blockIdx.x);
  const int per_group = order.group * order.tiles;
  const int g = launch / per_group, within = launch % per_group;
  const int heads_in_group = min(order.group, order.heads - g * order.group);  // last: fewer
  return {g * order.group + within % heads_in_group, within / heads_in_group};
}
// Softmax in base 2 (kLog2e, kLn2: cuda_common.cuh). The scores are scaled by scale * log2 e once,
// so every exponential is one ex2 (and in the backward one fma + ex2); the saved lse stays
// natural (ln), as the other implementations and the CPU twin have it.
// The dK/dV kernel (64-query steps) wanted ~178 registers; capped at 168 (3 blocks of 128
// threads per SM; no spill for HS = 64 since the compile-time tile loaders) it keeps 12
// warps per SM in flight instead of 8.
#ifndef ACCUM_ATTENTION_DKDV_BLOCKS_PER_SM
#define ACCUM_ATTENTION_DKDV_BLOCKS_PER_SM 3
#endif
constexpr int kDkDvBlocksPerSm = ACCUM_ATTENTION_DKDV_BLOCKS_PER_SM;

// The forward kernels' key tile (they hold no dK/dV, so 64 rows fit every head size).
constexpr int kForwardKeys = 64;

template <int HS>
struct Shape {
  static constexpr int kStride = HS + 8;  // padded smem row: conflict-free fragment loads
  // Rows of the streamed operand per step: 64, or 32 for HS = 128 to bound registers.
  static constexpr int kInner = HS >= 128 ? 32 : 64;
  static constexpr int kDTiles = HS / 8;   // n8 tiles across the head dimension
  static constexpr int kDSteps = HS / 16;  // k16 steps across the head dimension
  static constexpr int kInnerTiles = kInner / 8;
  static_assert(HS % 16 == 0, "B fragments are loaded two n8 tiles at a time");
};

// Row (0..15) and column (0..7) within a 16x8 accumulator tile of element e (0..3).
__device__ inline int acc_row(int e) { return mma::lane_g() + (e >= 2 ? 8 : 0); }
__device__ inline int acc_col(int e) { return 2 * mma::lane_t() + (e & 1); }

// dst[row][d..d+1] = bf16(acc * scale[half]) for the 16 x HS accumulators of one warp
// (rows < T only); half 0 holds the warp's rows 0..7, half 1 its rows 8..15.
template <int HS>
__device__ inline void store_rows(bf16* dst, size_t row_stride, int row0, int T,
                                  const float (&acc)[HS / 8][4], const float (&scale)[2]) {
  for (int j = 0; j < HS / 8; ++j) {
    for (int half = 0; half < 2; ++half) {
      const int row = row0 + mma::lane_g() + 8 * half;
      if (row >= T) continue;
      bf16* p = dst + static_cast<size_t>(row) * row_stride + j * 8 + 2 * mma::lane_t();
      p[0] = to_bf16(acc[j][2 * half] * scale[half]);
      p[1] = to_bf16(acc[j][2 * half + 1] * scale[half]);
    }
  }
}

template <int kTiles>
__device__ inline void zero(float (&acc)[kTiles][4]) {
  for (int j = 0; j < kTiles; ++j)
    for (int e = 0; e < 4; ++e) acc[j][e] = 0.f;
}

// x[j] = A1 B1 and y[j] = A2 B2 over the head dimension, for one warp's 16 rows: A1, A2 are
// rows row0.. of a1_tile, a2_tile; B1[d][n] = b1_tile[n][d], B2 likewise (kTiles x 8 columns).
// (S and dP: dK/dV take A = K, V and B from Q, dO; dQ takes A = Q, dO and B from K, V.)
template <int HS, int kTiles>
__device__ inline void two_products(float (&x)[kTiles][4], float (&y)[kTiles][4],
                                    const bf16* a1_tile, const bf16* a2_tile, const bf16* b1_tile,
                                    const bf16* b2_tile, int row0) {
  constexpr int kStride = Shape<HS>::kStride;
  zero(x);
  zero(y);
  for (int kk = 0; kk < HS / 16; ++kk) {
    uint32_t a1[4], a2[4];
    mma::load_a(a1, a1_tile, kStride, row0, kk * 16);
    mma::load_a(a2, a2_tile, kStride, row0, kk * 16);
    for (int j = 0; j < kTiles; j += 2) {
      uint32_t b1[2][2], b2[2][2];
      mma::load_b2_rows_n(b1[0], b1[1], b1_tile, kStride, j * 8, kk * 16);
      mma::load_b2_rows_n(b2[0], b2[1], b2_tile, kStride, j * 8, kk * 16);
      for (int h = 0; h < 2; ++h) {
        mma::mma_16816(x[j + h], a1, b1[h]);
        mma::mma_16816(y[j + h], a2, b2[h]);
      }
    }
  }
}

// s[i] (16 x kKeys) = Q K^T for m-tile i (16 query rows) of the kM tiles one warp owns, Q as
// A fragments over the head dimension, K as rows of k_tile. Each B fragment of K is loaded
// once for all kM tiles (with kM = 2, half the shared-memory reads per product). A tile with
// !active[i] (its rows all before the key tile: every score masked) is skipped.
template <int HS, int kM, int kKeys = kForwardKeys>
__device__ inline void query_key_scores(float (&s)[kM][kKeys / 8][4],
                                        const uint32_t (&q_frag)[kM][HS / 16][4],
                                        const bf16* k_tile, const bool (&active)[kM]) {
  ACCUM_UNROLL for (int i = 0; i < kM; ++i) zero(s[i]);
  for (int kk = 0; kk < HS / 16; ++kk) {
    for (int j = 0; j < kKeys / 8; j += 2) {
      uint32_t kb[2][2];
      mma::load_b2_rows_n(kb[0], kb[1], k_tile, Shape<HS>::kStride, j * 8, kk * 16);
      ACCUM_UNROLL for (int i = 0; i < kM; ++i) {
        if (!active[i]) continue;
        mma::mma_16816(s[i][j], q_frag[i][kk], kb[0]);
        mma::mma_16816(s[i][j + 1], q_frag[i][kk], kb[1]);
      }
    }
  }
}

// acc[i](16 x HS) += P[i](16 x kCols) tile(kCols x HS) for the kM m-tiles of one warp, P
// given as fp32 accumulators (rounded to bf16 here); each B fragment of the tile is loaded
// once for all kM m-tiles, and an m-tile with !active[i] is skipped. The forward's O += P V
// (one or two m-tiles) and, through accumulate_times_tile, the backward's dV += P^T dO,
// dK += dS^T Q and dQ += dS K are all this product.
template <int HS, int kM, int kCols>
__device__ inline void accumulate_rows_times_tile(float (&acc)[kM][HS / 8][4],
                                                  const float (&p)[kM][kCols / 8][4],
                                                  const bf16* tile, const bool (&active)[kM]) {
  for (int kk = 0; kk < kCols / 16; ++kk) {
    uint32_t p_frag[kM][4];
    ACCUM_UNROLL for (int i = 0; i < kM; ++i)
        mma::acc_to_a(p_frag[i], p[i][2 * kk], p[i][2 * kk + 1]);
    for (int j = 0; j < HS / 8; j += 2) {
      uint32_t b[2][2];
      mma::load_b2_rows_k(b[0], b[1], tile, Shape<HS>::kStride, kk * 16, j * 8);
      ACCUM_UNROLL for (int i = 0; i < kM; ++i) {
        if (!active[i]) continue;
        mma::mma_16816(acc[i][j], p_frag[i], b[0]);
        mma::mma_16816(acc[i][j + 1], p_frag[i], b[1]);
      }
    }
  }
}

// The same product for one warp's single m-tile (the backward kernels).
template <int HS, int kCols>
__device__ inline void accumulate_times_tile(float (&acc)[HS / 8][4],
                                             const float (&p)[kCols / 8][4], const bf16* tile) {
  constexpr bool kActive[1] = {true};
  accumulate_rows_times_tile<HS, 1, kCols>(reinterpret_cast<float(&)[1][HS / 8][4]>(acc),
                                           reinterpret_cast<const float(&)[1][kCols / 8][4]>(p),
                                           tile, kActive);
}

// The online softmax of one 64-key tile for one warp's 16 rows (row0.. of the sequence; keys
// k0..): masks future keys and keys past T when `masked` (the tile reaches the block's
// diagonal or T), updates the running max m and sum l of rows g and g + 8, rescales o, and
// leaves P in s. m is kept in units of the raw scores, so the scale folds into one fma per
// exponential: p = 2^(s scale log2(e) - m scale log2(e)). No row is ever all -inf: the first
// key tile holds key 0, which every row sees (0 <= row, 0 < T), so m is finite from the
// first tile on, and masked scores give exp2(-inf) = 0. l stays per lane (this lane's
// columns); the row's 4 lanes are summed by store_forward_rows.
template <int HS, int kKeys = kForwardKeys>
__device__ inline void online_softmax(float (&s)[kKeys / 8][4], float (&o)[HS / 8][4],
                                      float (&m)[2], float (&l)[2], int row0, int k0, bool masked,
                                      int T, float scale_log2) {
  float tile_max[2] = {-INFINITY, -INFINITY};
  for (int j = 0; j < kKeys / 8; ++j) {
    for (int e = 0; e < 4; ++e) {
      if (masked) {
        const int row = row0 + acc_row(e), key = k0 + j * 8 + acc_col(e);
        if (key > row || key >= T) s[j][e] = -INFINITY;
      }
      tile_max[e / 2] = fmaxf(tile_max[e / 2], s[j][e]);
    }
  }
  float correction[2], m_scaled[2];
  for (int r = 0; r < 2; ++r) {
    float mx = tile_max[r];
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m[r], mx);
    correction[r] = exp2f((m[r] - m_new) * scale_log2);  // first tile: exp2(-inf) = 0
    m[r] = m_new;
    m_scaled[r] = m_new * scale_log2;
  }
  float row_sum[2] = {0.f, 0.f};
  for (int j = 0; j < kKeys / 8; ++j) {
    for (int e = 0; e < 4; ++e) {
      const float p = exp2f(fmaf(s[j][e], scale_log2, -m_scaled[e / 2]));
      s[j][e] = p;
      row_sum[e / 2] += p;
    }
  }
  for (int r = 0; r < 2; ++r) l[r] = l[r] * correction[r] + row_sum[r];
  for (int j = 0; j < HS / 8; ++j) {
    for (int e = 0; e < 4; ++e) o[j][e] *= correction[e / 2];
  }
}

// out rows row0.. = O / l and lse = m + ln l (natural log) for one warp's 16 rows; `batch_row0`
// is b * T, the first row of this sequence in out.
template <int HS>
__device__ inline void store_forward_rows(bf16* out, float* lse, int bh, int batch_row0, int h,
                                          int row0, int T, int C, const float (&o)[HS / 8][4],
                                          const float (&m)[2], float (&l)[2], float scale_log2) {
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  const float inv_l[2] = {1.f / l[0], 1.f / l[1]};
  store_rows<HS>(out + static_cast<size_t>(batch_row0) * C + h * HS, C, row0, T, o, inv_l);
  if (mma::lane_t() == 0) {
    for (int half = 0; half < 2; ++half) {
      const int row = row0 + mma::lane_g() + 8 * half;
      if (row < T) {
        lse[static_cast<size_t>(bh) * T + row] = (m[half] * scale_log2 + __log2f(l[half])) * kLn2;
      }
    }
  }
}

// One block per 64 kM queries (4 warps of 16 kM rows): O and lse over the key tiles up to
// the diagonal. kM = 1 (the default) is capped at 128 registers (4 blocks of 128 threads
// per SM; uncapped it takes 134 and fits 3). kM = 2 (ACCUM_ATTENTION=mma_fwd128, head sizes
// up to 64, a candidate) loads every K and V fragment once for two m-tiles and every K and
// V tile once for 128 queries, at about twice the registers (2 blocks per SM). Either way
// every row sees the same products in the same order: the same bits.
template <int HS, int kM>
__global__ void __launch_bounds__(kThreads, HS >= 128 || kM > 1 ? 2 : 4)
    attention_forward_mma_kernel(bf16* out, float* lse, const bf16* qkv, int T, int C, int NH,
                                 float scale, BlockOrder order) {
  using S = Shape<HS>;
  const float scale_log2 = scale * kLog2e;
  constexpr int kKeys = kForwardKeys;
  constexpr int kBlockRows = kRows * kM, kWarpRows = 16 * kM;
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  bf16* q_tile = reinterpret_cast<bf16*>(smem_bytes);
  bf16* kv_tiles = q_tile + kBlockRows * S::kStride;  // two buffers of (K, V) tiles
  auto k_tile = [&](int buf) { return kv_tiles + (2 * buf) * kKeys * S::kStride; };
  auto v_tile = [&](int buf) { return kv_tiles + (2 * buf + 1) * kKeys * S::kStride; };

  const BlockTask task = block_task(order);
  const int bh = task.bh, b = bh / NH, h = bh % NH;
  const int q0 = (order.tiles - 1 - task.rank) * kBlockRows;  // the last rows see the most keys
  const int warp_row0 = q0 + (threadIdx.x / kWarpSize) * kWarpRows;  // in the sequence
  const size_t row_stride = 3 * static_cast<size_t>(C);
  const bf16* q_base = qkv + static_cast<size_t>(b) * T * row_stride + h * HS;
  auto load_kv = [&](int k0, int buf) {
    load_rows_async<HS, kKeys, kThreads>(k_tile(buf), S::kStride, q_base + C, row_stride, k0, T);
    load_rows_async<HS, kKeys, kThreads>(v_tile(buf), S::kStride, q_base + 2 * C, row_stride, k0,
                                         T);
    cp_async_commit();
  };

  load_rows<HS>(q_tile, S::kStride, q_base, row_stride, q0, kBlockRows, T);
  load_kv(0, 0);
  __syncthreads();
  uint32_t q_frag[kM][S::kDSteps][4];
  ACCUM_UNROLL for (int i = 0; i < kM; ++i) {
    for (int kk = 0; kk < S::kDSteps; ++kk) {
      mma::load_a(q_frag[i][kk], q_tile, S::kStride, warp_row0 - q0 + 16 * i, kk * 16);
    }
  }

  float o[kM][S::kDTiles][4];
  float m[kM][2], l[kM][2];  // rows g and g + 8 of each m-tile
  ACCUM_UNROLL for (int i = 0; i < kM; ++i) {
    zero(o[i]);
    m[i][0] = m[i][1] = -INFINITY;
    l[i][0] = l[i][1] = 0.f;
  }
  const int last_key = min(T, q0 + kBlockRows) - 1;

  // Double buffering with one barrier per step: after this step's copies have landed, the
  // barrier both makes tile `buf` visible and proves every warp done with the previous step,
  // so the next step's copies refill buffer buf ^ 1 while this step computes. They are
  // issued after the S products (at the barrier, ptxas spilled 16 bytes at the 128-register
  // cap; here, for HS = 64, CUDA 13's ptxas needs 128 and none; 230 with kM = 2).
  for (int k0 = 0, buf = 0; k0 <= last_key; k0 += kKeys, buf ^= 1) {
    cp_async_wait<0>();
    __syncthreads();

    // With kM = 1 every tile is active (the block's key tiles end at its own rows' diagonal);
    // with two, the first rows of a 128-query block skip the last key tile.
    bool active[kM];
    ACCUM_UNROLL for (int i = 0; i < kM; ++i) active[i] = kM == 1 || k0 <= warp_row0 + 16 * i + 15;
    float s[kM][kKeys / 8][4];
    query_key_scores<HS, kM>(s, q_frag, k_tile(buf), active);
    if (k0 + kKeys <= last_key) load_kv(k0 + kKeys, buf ^ 1);
    ACCUM_UNROLL for (int i = 0; i < kM; ++i) {
      // Masks are applied in tiles that reach the rows' diagonal (or T). With one m-tile the
      // block's first row decides for every warp, which is the same set of tiles, and the
      // uniform test saves registers (ptxas spilled 16 bytes at HS = 64 with the per-warp one).
      const int row0 = warp_row0 + 16 * i;
      const bool masked = k0 + kKeys > (kM == 1 ? q0 : row0);
      if (active[i]) online_softmax<HS>(s[i], o[i], m[i], l[i], row0, k0, masked, T, scale_log2);
    }
    accumulate_rows_times_tile<HS, kM, kKeys>(o, s, v_tile(buf), active);  // O += P V
  }

  ACCUM_UNROLL for (int i = 0; i < kM; ++i) {
    store_forward_rows<HS>(out, lse, bh, b * T, h, warp_row0 + 16 * i, T, C, o[i], m[i], l[i],
                           scale_log2);
  }
}

// The dK/dV kernels' step for one warp's 16 keys (key_row0 ..) and kInner queries (q0 ..):
// S^T, dP^T in, P^T = exp(S^T - lse) and dS^T = P^T (dP^T - D) out, in place. lse_q and
// delta_q are the step's lse (natural log) and D per query, in shared memory. `masked`: the
// step reaches the diagonal or T (masked entries get P = 0).
template <int kInner>
__device__ inline void transposed_probabilities(float (&st)[kInner / 8][4],
                                                float (&dpt)[kInner / 8][4], const float* lse_q,
                                                const float* delta_q, int key_row0, int q0,
                                                bool masked, int T, float scale_log2) {
  for (int j = 0; j < kInner / 8; ++j) {
    // This lane's two query columns of tile j: adjacent, so one 8-byte load each.
    ACCUM_VECTOR_ACCESS(lse_q + j * 8 + acc_col(0), 8);
    ACCUM_VECTOR_ACCESS(delta_q + j * 8 + acc_col(0), 8);
    const float2 lse2 = *reinterpret_cast<const float2*>(lse_q + j * 8 + acc_col(0));
    const float2 delta2 = *reinterpret_cast<const float2*>(delta_q + j * 8 + acc_col(0));
    const float lse_x = lse2.x * kLog2e, lse_y = lse2.y * kLog2e;  // base 2
    for (int e = 0; e < 4; ++e) {
      const float lse_e = (e & 1) ? lse_y : lse_x, delta_e = (e & 1) ? delta2.y : delta2.x;
      bool visible = true;
      if (masked) {
        const int key = key_row0 + acc_row(e), query = q0 + j * 8 + acc_col(e);
        visible = query >= key && query < T && key < T;
      }
      const float p = visible ? exp2f(fmaf(st[j][e], scale_log2, -lse_e)) : 0.f;
      st[j][e] = p;                           // P^T
      dpt[j][e] = p * (dpt[j][e] - delta_e);  // dS^T
    }
  }
}

// The dQ kernel's step for one warp's 16 queries (row0 ..) and kInner keys (k0 ..): S, dP in,
// dS = P (dP - D) out in s, with P = exp(S - lse); row_lse (base 2) and row_delta for the
// lane's rows g and g + 8. `masked`: the step reaches the diagonal or rows past T.
template <int kInner>
__device__ inline void score_gradients(float (&s)[kInner / 8][4], const float (&dp)[kInner / 8][4],
                                       const float (&row_lse)[2], const float (&row_delta)[2],
                                       int row0, int k0, bool masked, int T, float scale_log2) {
  for (int j = 0; j < kInner / 8; ++j) {
    for (int e = 0; e < 4; ++e) {
      bool visible = true;
      if (masked) {
        const int row = row0 + acc_row(e), key = k0 + j * 8 + acc_col(e);
        visible = key <= row && key < T && row < T;
      }
      const float p = visible ? exp2f(fmaf(s[j][e], scale_log2, -row_lse[e / 2])) : 0.f;
      s[j][e] = p * (dp[j][e] - row_delta[e / 2]);  // dS
    }
  }
}

// A dK/dV step's statistics as cp.async copies (no commit): thread t < kInner copies lse of
// query q0 + t to stats[t], thread kInner + t its D to stats[kInner + t].
template <int kInner>
__device__ inline void load_stats_async(float* stats, const float* lse_row, const float* delta_row,
                                        int q0, int T) {
  if (threadIdx.x < 2 * kInner) {
    const bool is_lse = threadIdx.x < kInner;
    const int row = q0 + threadIdx.x - (is_lse ? 0 : kInner);
    const float* src = is_lse ? lse_row : delta_row;
    // Past T: zero-filled, nothing read (row 0 stands in for a valid address).
    cp_async4(stats + threadIdx.x, row < T ? src + row : src, row >= T);
  }
}

// One block per 64 keys: dK, dV over the query tiles at and after the diagonal, kInner
// queries per step: 64, or 32 with ACCUM_ATTENTION=mma_dkdv32 (half the S^T and dP^T
// registers, so 4 blocks per SM fit at 128 registers instead of 3 at 168; on an H200 it
// measured 1% faster per GPT-2 step once and 184 vs 178 us per launch under ncu another
// time, so it stays a candidate).
template <int HS, int kInner>
__global__ void __launch_bounds__(kThreads, HS >= 128      ? 2
                                            : kInner <= 32 ? 4
                                                           : kDkDvBlocksPerSm)
    attention_backward_dkdv_mma_kernel(bf16* dqkv, const bf16* dout, const bf16* qkv,
                                       const float* lse, const float* delta, int T, int C, int NH,
                                       float scale, BlockOrder order) {
  using S = Shape<HS>;
  const float scale_log2 = scale * kLog2e;
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  bf16* k_tile = reinterpret_cast<bf16*>(smem_bytes);
  bf16* v_tile = k_tile + kRows * S::kStride;
  bf16* qdo_tiles = v_tile + kRows * S::kStride;  // two buffers of (Q, dO) tiles
  auto q_tile = [&](int buf) { return qdo_tiles + (2 * buf) * kInner * S::kStride; };
  auto do_tile = [&](int buf) { return qdo_tiles + (2 * buf + 1) * kInner * S::kStride; };
  float* stats = reinterpret_cast<float*>(qdo_tiles + 4 * kInner * S::kStride);
  auto lse_tile = [&](int buf) { return stats + (2 * buf) * kInner; };
  auto delta_tile = [&](int buf) { return stats + (2 * buf + 1) * kInner; };

  const BlockTask task = block_task(order);
  const int bh = task.bh, b = bh / NH, h = bh % NH;
  const int key0 = task.rank * kRows;  // key tile 0 has the most query tiles
  const int warp_row0 = (threadIdx.x / kWarpSize) * 16;
  const size_t row_stride = 3 * static_cast<size_t>(C);
  const bf16* q_base = qkv + static_cast<size_t>(b) * T * row_stride + h * HS;
  const bf16* do_base = dout + static_cast<size_t>(b) * T * C + h * HS;
  const float* lse_row = lse + static_cast<size_t>(bh) * T;
  const float* delta_row = delta + static_cast<size_t>(bh) * T;
  // The step's lse and D travel in its cp.async group, one float per thread: plain loads
  // would stall the loading threads (and so the block, at the next barrier) for a round
  // trip to L2 every step. They land unscaled; the consumer takes lse log2 e (the same
  // product as before, so the same bits; it costs HS = 64 one 4-byte spill at 168 registers).
  // Thread t < kInner copies lse of query q0 + t into lse_tile(buf)[t], thread kInner + t
  // D into delta_tile(buf)[t] (= lse_tile(buf)[kInner + t]).
  static_assert(2 * kInner <= kThreads, "one statistic per thread");
  auto load_step = [&](int q0, int buf) {
    load_rows_async<HS, kInner, kThreads>(q_tile(buf), S::kStride, q_base, row_stride, q0, T);
    load_rows_async<HS, kInner, kThreads>(do_tile(buf), S::kStride, do_base, C, q0, T);
    load_stats_async<kInner>(lse_tile(buf), lse_row, delta_row, q0, T);
    cp_async_commit();
  };

  load_rows<HS>(k_tile, S::kStride, q_base + C, row_stride, key0, kRows, T);
  load_rows<HS>(v_tile, S::kStride, q_base + 2 * C, row_stride, key0, kRows, T);
  load_step(key0, 0);
  float dk[S::kDTiles][4], dv[S::kDTiles][4];
  zero(dk);
  zero(dv);

  // Causal: queries i >= key0. Double buffering with one barrier per step, as in the
  // forward (the first step's barrier also publishes the K, V tiles).
  for (int q0 = key0, buf = 0; q0 < T; q0 += kInner, buf ^= 1) {
    cp_async_wait<0>();
    __syncthreads();
    if (q0 + kInner < T) load_step(q0 + kInner, buf ^ 1);

    float st[kInner / 8][4], dpt[kInner / 8][4];  // S^T, dP^T: 16 keys x kInner queries
    two_products<HS>(st, dpt, k_tile, v_tile, q_tile(buf), do_tile(buf), warp_row0);
    transposed_probabilities<kInner>(st, dpt, lse_tile(buf), delta_tile(buf), key0 + warp_row0, q0,
                                     q0 < key0 + kRows || q0 + kInner > T, T, scale_log2);
    accumulate_times_tile<HS, kInner>(dv, st, do_tile(buf));  // dV += P^T dO
    accumulate_times_tile<HS, kInner>(dk, dpt, q_tile(buf));  // dK += dS^T Q
  }
  bf16* dqkv_base = dqkv + static_cast<size_t>(b) * T * row_stride + h * HS;
  store_rows<HS>(dqkv_base + C, row_stride, key0 + warp_row0, T, dk, {scale, scale});
  store_rows<HS>(dqkv_base + 2 * C, row_stride, key0 + warp_row0, T, dv, {1.f, 1.f});
}

// D = rowsum(dO * O) of the warp's 16 rows row0 .. row0 + 15 with the delta kernel's
// arithmetic (row_dot_lanes: the same bits), written to delta_row[row] for the dK/dV kernel
// and returned in row_delta for this lane's two accumulator rows (lane_g, lane_g + 8).
// 32 / (HS/8) rows per pass; every lane of the warp takes part.
template <int HS>
__device__ void warp_row_deltas(float (&row_delta)[2], float* delta_row, const bf16* do_base,
                                const bf16* o_base, int row0, int T, int C) {
  constexpr int kLanes = HS / 8;
  constexpr int kRowsPerPass = kWarpSize / kLanes;
  const int lane = threadIdx.x % kWarpSize, piece = lane % kLanes;
  for (int pass = 0; pass < 16 / kRowsPerPass; ++pass) {
    const int first = pass * kRowsPerPass;  // the pass's first row, of the warp's 16
    const int row = row0 + first + lane / kLanes;
    const size_t offset = row < T ? static_cast<size_t>(row) * C + piece * 8 : 0;
    const float sum = row_dot_lanes<HS>(do_base + offset, o_base + offset, row < T);
    if (row < T && piece == 0) delta_row[row] = sum;
    for (int half = 0; half < 2; ++half) {
      const int mine = mma::lane_g() + 8 * half - first;  // my row, in this pass's rows
      const bool in_pass = mine >= 0 && mine < kRowsPerPass;
      const float value = __shfl_sync(0xffffffffu, sum, in_pass ? mine * kLanes : 0);
      if (in_pass) row_delta[half] = value;
    }
  }
}

// One block per 64 queries: D of its rows, then dQ over the key tiles up to the diagonal.
// Capped at 128 registers (4 blocks per SM; uncapped it takes 164 and fits 3).
template <int HS>
__global__ void __launch_bounds__(kThreads, HS >= 128 ? 2 : 4)
    attention_backward_dq_mma_kernel(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out,
                                     const float* lse, float* delta, int T, int C, int NH,
                                     float scale, BlockOrder order) {
  using S = Shape<HS>;
  const float scale_log2 = scale * kLog2e;
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  bf16* q_tile = reinterpret_cast<bf16*>(smem_bytes);
  bf16* do_tile = q_tile + kRows * S::kStride;
  bf16* kv_tiles = do_tile + kRows * S::kStride;  // two buffers of (K, V) tiles
  auto k_tile = [&](int buf) { return kv_tiles + (2 * buf) * S::kInner * S::kStride; };
  auto v_tile = [&](int buf) { return kv_tiles + (2 * buf + 1) * S::kInner * S::kStride; };

  const BlockTask task = block_task(order);
  const int bh = task.bh, b = bh / NH, h = bh % NH;
  const int q0 = (order.tiles - 1 - task.rank) * kRows;  // the last rows see the most keys
  const int warp_row0 = (threadIdx.x / kWarpSize) * 16;
  const size_t row_stride = 3 * static_cast<size_t>(C);
  const bf16* q_base = qkv + static_cast<size_t>(b) * T * row_stride + h * HS;
  const bf16* do_base = dout + static_cast<size_t>(b) * T * C + h * HS;
  auto load_kv = [&](int k0, int buf) {
    load_rows_async<HS, S::kInner, kThreads>(k_tile(buf), S::kStride, q_base + C, row_stride, k0,
                                             T);
    load_rows_async<HS, S::kInner, kThreads>(v_tile(buf), S::kStride, q_base + 2 * C, row_stride,
                                             k0, T);
    cp_async_commit();
  };

  load_rows<HS>(q_tile, S::kStride, q_base, row_stride, q0, kRows, T);
  load_rows<HS>(do_tile, S::kStride, do_base, C, q0, kRows, T);
  load_kv(0, 0);
  float row_lse[2], row_delta[2];
  for (int half = 0; half < 2; ++half) {
    const int row = q0 + warp_row0 + mma::lane_g() + 8 * half;
    row_lse[half] = row < T ? lse[static_cast<size_t>(bh) * T + row] * kLog2e : 0.f;
  }
  // While the first K, V tiles land: dO is in L2 from the tile load above.
  warp_row_deltas<HS>(row_delta, delta + static_cast<size_t>(bh) * T, do_base,
                      out + static_cast<size_t>(b) * T * C + h * HS, q0 + warp_row0, T, C);
  float dq[S::kDTiles][4];
  zero(dq);
  const int last_key = min(T, q0 + kRows) - 1;

  // One barrier per step, as in the forward (the first also publishes the Q, dO tiles).
  for (int k0 = 0, buf = 0; k0 <= last_key; k0 += S::kInner, buf ^= 1) {
    cp_async_wait<0>();
    __syncthreads();
    if (k0 + S::kInner <= last_key) load_kv(k0 + S::kInner, buf ^ 1);

    float s[S::kInnerTiles][4], dp[S::kInnerTiles][4];  // S, dP: 16 queries x kInner keys
    two_products<HS>(s, dp, q_tile, do_tile, k_tile(buf), v_tile(buf), warp_row0);
    score_gradients<S::kInner>(s, dp, row_lse, row_delta, q0 + warp_row0, k0,
                               k0 + S::kInner > q0 || q0 + kRows > T, T, scale_log2);
    accumulate_times_tile<HS, S::kInner>(dq, s, k_tile(buf));  // dQ += dS K
  }
  store_rows<HS>(dqkv + static_cast<size_t>(b) * T * row_stride + h * HS, row_stride,
                 q0 + warp_row0, T, dq, {scale, scale});
}

// Launches `kernel` with `smem` bytes of dynamic shared memory, raising the kernel's limit
// above the 48 KiB default when needed (HS = 128 tiles take ~52 KiB).
template <typename Kernel, typename... Args>
void launch(Kernel kernel, const char* name, const BlockOrder& order, size_t smem,
            cudaStream_t stream, Args... args) {
  allow_dynamic_shared(kernel, smem);
  const unsigned blocks = static_cast<unsigned>(order.heads) * static_cast<unsigned>(order.tiles);
  kernel<<<blocks, kThreads, smem, stream>>>(args..., order);
  check_cuda(cudaGetLastError(), name, __FILE__, __LINE__);
}

// The order of a grid of `heads` x ceil(T / block_rows) blocks.
BlockOrder block_order(int heads, int T, int block_rows = kRows) {
  return {heads, ceil_div(T, block_rows), attention_head_group(heads)};
}

template <typename Body>
bool dispatch_mma_head_size(int hs, Body body) {
  switch (hs) {
    case 16:
      body(std::integral_constant<int, 16>{});
      return true;
    case 32:
      body(std::integral_constant<int, 32>{});
      return true;
    case 64:
      body(std::integral_constant<int, 64>{});
      return true;
    case 128:
      body(std::integral_constant<int, 128>{});
      return true;
    default:
      return false;
  }
}

}  // namespace

bool attention_mma_supports(int hs) { return hs == 16 || hs == 32 || hs == 64 || hs == 128; }

int attention_head_group(int heads) {
  const char* value = std::getenv("ACCUM_ATTENTION_HEAD_GROUP");
  if (value == nullptr || *value == '\0') return heads;
  char* end = nullptr;
  errno = 0;
  const long group = std::strtol(value, &end, 10);
  if (*end != '\0' || errno != 0 || group < 1 || group > (1L << 30)) {
    cuda_fatal("attention",
               ("ACCUM_ATTENTION_HEAD_GROUP='" + std::string(value) +
                "' is not a head count (expected an integer >= 1, or unset for all "
                "heads)")
                   .c_str(),
               __FILE__, __LINE__);
  }
  return static_cast<int>(std::min<long>(group, heads));
}

void attention_forward_mma(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                           ForwardKernel choice, cudaStream_t stream) {
  const int hs = C / NH;
  const float scale = 1.f / sqrtf(static_cast<float>(hs));
  dispatch_mma_head_size(hs, [&](auto head_size) {
    constexpr int HS = decltype(head_size)::value;
    auto forward = [&](auto kernel, int m_tiles) {
      // The query tile and two buffers of K and of V tiles of 64 rows.
      const size_t smem = sizeof(bf16) * (kRows * m_tiles + 4 * kForwardKeys) * Shape<HS>::kStride;
      launch(kernel, "attention_forward_mma_kernel", block_order(B * NH, T, kRows * m_tiles), smem,
             stream, out, lse, qkv, T, C, NH, scale);
    };
    if constexpr (HS <= 64) {  // with HS = 128, two m-tiles would spill
      if (choice == ForwardKernel::kWide) return forward(attention_forward_mma_kernel<HS, 2>, 2);
    }
    forward(attention_forward_mma_kernel<HS, 1>, 1);
  });
}

void attention_backward_mma(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out,
                            const float* lse, float* delta, int B, int T, int C, int NH,
                            BackwardKernels choice, cudaStream_t stream) {
  const int hs = C / NH;
  const float scale = 1.f / sqrtf(static_cast<float>(hs));
  const BlockOrder order = block_order(B * NH, T);
  dispatch_mma_head_size(hs, [&](auto head_size) {
    constexpr int HS = decltype(head_size)::value;
    using S = Shape<HS>;
    // Two rows of kRows resident, two buffers of two kInner-row tiles streamed.
    const size_t tiles = sizeof(bf16) * (2 * kRows + 4 * S::kInner) * S::kStride;
    // dQ first: it writes D, which every dK/dV block reads for all its query steps.
    launch(attention_backward_dq_mma_kernel<HS>, "attention_backward_dq_mma_kernel", order, tiles,
           stream, dqkv, dout, qkv, out, lse, delta, T, C, NH, scale);
    auto dkdv = [&](auto kernel, int inner) {
      const size_t smem = sizeof(bf16) * (2 * kRows + 4 * inner) * S::kStride;
      launch(kernel, "attention_backward_dkdv_mma_kernel", order, smem + 4 * sizeof(float) * inner,
             stream, dqkv, dout, qkv, lse, delta, T, C, NH, scale);
    };
    if (choice == BackwardKernels::kNarrowDkDv && S::kInner > 32) {
      dkdv(attention_backward_dkdv_mma_kernel<HS, 32>, 32);
    } else {
      dkdv(attention_backward_dkdv_mma_kernel<HS, S::kInner>, S::kInner);
    }
  });
}

}  // namespace accum::kernels::cuda
