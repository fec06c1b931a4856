// attention: causal multi-head self-attention on BLAS, probabilities saved.
//
//   qkv(B,T,3C) = [q | k | v]; head h uses channels h*hs..(h+1)*hs, hs = C/NH.
//   forward, per (b,h):
//     S(T,T) = scale * Q K^T, scale = 1/sqrt(hs)
//     P_tj  = softmax_j(S_tj) over j <= t, 0 for j > t     -> probs(B,NH,T,T)
//     O     = P V                                          -> out(B,T,C) head slice
//   backward (dqkv written), per (b,h), dK = dV = 0 to start:
//     dP    = dO V^T
//     dS_tj = scale * P_tj * (dP_tj - sum_k P_tk dP_tk)    // softmax backward
//     dQ  = dS K;  dK += dS^T Q;  dV += P^T dO  (per block of query rows)
//
// Each (b,h) is one OpenMP task with its own single-threaded GEMMs (the heads are
// too small to split well). Query rows go in blocks of row_block: a block
// [r0,r1) only needs key columns [0,r1), which skips most work above the
// diagonal. The backward's dS lives in per-thread scratch of row_block x T,
// allocated once per thread and reused.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd_math.h"

namespace accum::kernels::cpu {
namespace {

// row[0..len) <- softmax(row[0..len)); row[len..T) <- 0.
template <typename F>
ACCUM_CPU_CLONES void softmax_causal_row(F* row, int len, int T) {
  const F max_score = lane_max(row, len);
  F acc[kLanes] = {};
  int j = 0;
  for (; j + kLanes <= len; j += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const F e = exp_approx(row[j + k] - max_score);
      row[j + k] = e;
      acc[k] += e;
    }
  }
  for (int k = 0; j + k < len; ++k) {
    const F e = exp_approx(row[j + k] - max_score);
    row[j + k] = e;
    acc[k] += e;
  }
  const F inv_sum = F(1) / combine_lanes(acc);
#pragma omp simd
  for (int i = 0; i < len; ++i) row[i] *= inv_sum;
  for (int i = len; i < T; ++i) row[i] = F(0);
}

// ds[0..len) <- scale * p * (dp - <p, dp>) in place over dp; ds[len..width) <- 0.
template <typename F>
ACCUM_CPU_CLONES void softmax_backward_row(F* dp, const F* p, int len, int width, F scale) {
  const F p_dot_dp = lane_dot(p, dp, len);
#pragma omp simd
  for (int j = 0; j < len; ++j) dp[j] = scale * (p[j] * (dp[j] - p_dot_dp));
  for (int j = len; j < width; ++j) dp[j] = F(0);
}

}  // namespace

template <typename F>
void attention_forward(F* out, F* probs, const F* qkv, int B, int T, int C, int NH, int row_block) {
  const int hs = C / NH;
  const int ld = 3 * C;
  const F scale = F(1) / std::sqrt(F(hs));
  BlasSingleThread blas_single_thread;
#pragma omp parallel for schedule(static)
  for (int bh = 0; bh < B * NH; ++bh) {
    const int b = bh / NH;
    const int h = bh % NH;
    const F* q = qkv + size_t(b) * T * ld + size_t(h) * hs;
    const F* k = q + C;
    const F* v = q + 2 * C;
    F* p = probs + size_t(bh) * T * T;
    F* o = out + size_t(b) * T * C + size_t(h) * hs;
    for (int r0 = 0; r0 < T; r0 += row_block) {
      const int r1 = std::min(T, r0 + row_block);
      gemm(false, true, r1 - r0, r1, hs, scale, q + size_t(r0) * ld, ld, k, ld, F(0),
           p + size_t(r0) * T, T);
      for (int t = r0; t < r1; ++t) softmax_causal_row(p + size_t(t) * T, t + 1, T);
      gemm(false, false, r1 - r0, hs, r1, F(1), p + size_t(r0) * T, T, v, ld, F(0),
           o + size_t(r0) * C, C);
    }
  }
}

template <typename F>
void attention_backward(F* dqkv, const F* dout, const F* qkv, const F* probs, int B, int T, int C,
                        int NH, int row_block) {
  const int hs = C / NH;
  const int ld = 3 * C;
  const F scale = F(1) / std::sqrt(F(hs));
  BlasSingleThread blas_single_thread;
#pragma omp parallel
  {
    thread_local std::vector<F> ds_scratch;  // (row_block, T): dP, then dS in place
    if (ds_scratch.size() < size_t(row_block) * T) ds_scratch.resize(size_t(row_block) * T);
    F* ds = ds_scratch.data();
#pragma omp for schedule(static)
    for (int bh = 0; bh < B * NH; ++bh) {
      const int b = bh / NH;
      const int h = bh % NH;
      const size_t head = size_t(b) * T * ld + size_t(h) * hs;
      const F* q = qkv + head;
      const F* k = q + C;
      const F* v = q + 2 * C;
      F* dq = dqkv + head;
      F* dk = dq + C;
      F* dv = dq + 2 * C;
      const F* p = probs + size_t(bh) * T * T;
      const F* dout_h = dout + size_t(b) * T * C + size_t(h) * hs;
      for (int t = 0; t < T; ++t) {  // key rows gather from every query block below
        std::fill_n(dk + size_t(t) * ld, hs, F(0));
        std::fill_n(dv + size_t(t) * ld, hs, F(0));
      }
      for (int r0 = 0; r0 < T; r0 += row_block) {
        const int r1 = std::min(T, r0 + row_block);
        const int rows = r1 - r0;
        const F* p_blk = p + size_t(r0) * T;
        const F* dout_blk = dout_h + size_t(r0) * C;
        gemm(false, true, rows, r1, hs, F(1), dout_blk, C, v, ld, F(0), ds, T);  // dP
        for (int t = r0; t < r1; ++t) {
          softmax_backward_row(ds + size_t(t - r0) * T, p + size_t(t) * T, t + 1, r1, scale);
        }
        gemm(false, false, rows, hs, r1, F(1), ds, T, k, ld, F(0), dq + size_t(r0) * ld, ld);
        gemm(true, false, r1, hs, rows, F(1), ds, T, q + size_t(r0) * ld, ld, F(1), dk, ld);
        gemm(true, false, r1, hs, rows, F(1), p_blk, T, dout_blk, C, F(1), dv, ld);
      }
    }
  }
}

template void attention_forward<float>(float*, float*, const float*, int, int, int, int, int);
template void attention_forward<double>(double*, double*, const double*, int, int, int, int, int);
template void attention_backward<float>(float*, const float*, const float*, const float*, int, int,
                                        int, int, int);
template void attention_backward<double>(double*, const double*, const double*, const double*, int,
                                         int, int, int, int);

}  // namespace accum::kernels::cpu
