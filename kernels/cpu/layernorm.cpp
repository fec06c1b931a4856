// layernorm over the last dimension, eps 1e-5 (as GPT-2 / llm.c).
//
//   forward, per row i of inp(N,C):
//     mean_i = sum_c x_ic / C;  rstd_i = 1 / sqrt(sum_c (x_ic - mean_i)^2 / C + eps)
//     norm_ic = (x_ic - mean_i) * rstd_i;  out_ic = norm_ic * weight_c + bias_c
//   backward (dinp +=; dweight, dbias += or, with GradMode::kWrite, =), with
//   dnorm_ic = weight_c * dout_ic:
//     dbias_c   += sum_i dout_ic
//     dweight_c += sum_i norm_ic * dout_ic
//     dinp_ic   += (dnorm_ic - mean_c'(dnorm_ic')                    // term 1, term 2
//                   - norm_ic * mean_c'(dnorm_ic' * norm_ic')) * rstd_i  // term 3
//     dinp_sum_c += sum_i dinp_ic, after the add (optional; by GradMode like dweight)
//
// dinp is parallel over rows; dweight/dbias are parallel over column chunks that
// walk the rows in order (deterministic, thread-count independent). The two-pass
// variance keeps precision for rows with a large mean.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd_math.h"

namespace accum::kernels::cpu {
namespace {

template <typename F>
ACCUM_CPU_CLONES void layernorm_forward_rows(F* out, F* mean, F* rstd, const F* inp,
                                             const F* weight, const F* bias, int row0, int row1,
                                             int C) {
  for (int row = row0; row < row1; ++row) {
    const F* x = inp + size_t(row) * C;
    const F m = lane_sum(x, C) / F(C);
    F acc[kLanes] = {};
    int c = 0;
    for (; c + kLanes <= C; c += kLanes) {
      for (int k = 0; k < kLanes; ++k) {
        const F dev = x[c + k] - m;
        acc[k] += dev * dev;
      }
    }
    for (int k = 0; c + k < C; ++k) {
      const F dev = x[c + k] - m;
      acc[k] += dev * dev;
    }
    const F var = combine_lanes(acc) / F(C);
    const F s = F(1) / std::sqrt(var + F(kLayerNormEps));
    F* o = out + size_t(row) * C;
#pragma omp simd
    for (int j = 0; j < C; ++j) o[j] = (s * (x[j] - m)) * weight[j] + bias[j];
    mean[row] = m;
    rstd[row] = s;
  }
}

template <typename F>
ACCUM_CPU_CLONES void layernorm_backward_rows(F* dinp, const F* dout, const F* inp, const F* weight,
                                              const F* mean, const F* rstd, int row0, int row1,
                                              int C) {
  for (int row = row0; row < row1; ++row) {
    const F* x = inp + size_t(row) * C;
    const F* d = dout + size_t(row) * C;
    const F m = mean[row];
    const F s = rstd[row];
    F acc_dnorm[kLanes] = {};
    F acc_dnorm_norm[kLanes] = {};
    int c = 0;
    for (; c + kLanes <= C; c += kLanes) {
      for (int k = 0; k < kLanes; ++k) {
        const F norm = (x[c + k] - m) * s;
        const F dnorm = weight[c + k] * d[c + k];
        acc_dnorm[k] += dnorm;
        acc_dnorm_norm[k] += dnorm * norm;
      }
    }
    for (int k = 0; c + k < C; ++k) {
      const F norm = (x[c + k] - m) * s;
      const F dnorm = weight[c + k] * d[c + k];
      acc_dnorm[k] += dnorm;
      acc_dnorm_norm[k] += dnorm * norm;
    }
    const F dnorm_mean = combine_lanes(acc_dnorm) / F(C);
    const F dnorm_norm_mean = combine_lanes(acc_dnorm_norm) / F(C);
    F* di = dinp + size_t(row) * C;
#pragma omp simd
    for (int j = 0; j < C; ++j) {
      const F norm = (x[j] - m) * s;
      const F dnorm = weight[j] * d[j];
      F dval = dnorm;                  // term 1
      dval -= dnorm_mean;              // term 2
      dval -= norm * dnorm_norm_mean;  // term 3
      di[j] += dval * s;
    }
  }
}

template <typename F>
ACCUM_CPU_CLONES void layernorm_param_grads_cols(F* dweight, F* dbias, const F* dout, const F* inp,
                                                 const F* mean, const F* rstd, int N, int c0,
                                                 int c1, int C, GradMode mode) {
  if (mode == GradMode::kWrite) {
    std::fill(dbias + c0, dbias + c1, F(0));
    std::fill(dweight + c0, dweight + c1, F(0));
  }
  for (int row = 0; row < N; ++row) {
    const F* x = inp + size_t(row) * C;
    const F* d = dout + size_t(row) * C;
    const F m = mean[row];
    const F s = rstd[row];
#pragma omp simd
    for (int c = c0; c < c1; ++c) {
      dbias[c] += d[c];
      dweight[c] += ((x[c] - m) * s) * d[c];
    }
  }
}

// dinp_sum[c0, c1) (+)= sum over the rows of dinp, in row order.
template <typename F>
void column_sums(F* dinp_sum, const F* dinp, int N, int c0, int c1, int C, GradMode mode) {
  if (mode == GradMode::kWrite) std::fill(dinp_sum + c0, dinp_sum + c1, F(0));
  for (int row = 0; row < N; ++row) {
    const F* d = dinp + size_t(row) * C;
#pragma omp simd
    for (int c = c0; c < c1; ++c) dinp_sum[c] += d[c];
  }
}

}  // namespace

template <typename F>
void layernorm_forward(F* out, F* mean, F* rstd, const F* inp, const F* weight, const F* bias,
                       int N, int C) {
  constexpr int kRows = 8;
  const int tasks = (N + kRows - 1) / kRows;
#pragma omp parallel for schedule(static) if (worth_parallel(size_t(N) * C, 1 << 14))
  for (int task = 0; task < tasks; ++task) {
    layernorm_forward_rows(out, mean, rstd, inp, weight, bias, task * kRows,
                           std::min(N, (task + 1) * kRows), C);
  }
}

template <typename F>
void layernorm_backward(F* dinp, F* dweight, F* dbias, F* dinp_sum, const F* dout, const F* inp,
                        const F* weight, const F* mean, const F* rstd, int N, int C,
                        GradMode mode) {
  constexpr int kRows = 8;
  constexpr int kCols = 64;
  const int row_tasks = (N + kRows - 1) / kRows;
  const int col_tasks = (C + kCols - 1) / kCols;
  const bool parallel = worth_parallel(size_t(N) * C, 1 << 14);
#pragma omp parallel if (parallel)
  {
#pragma omp for schedule(static) nowait
    for (int task = 0; task < row_tasks; ++task) {
      layernorm_backward_rows(dinp, dout, inp, weight, mean, rstd, task * kRows,
                              std::min(N, (task + 1) * kRows), C);
    }
#pragma omp for schedule(static)
    for (int task = 0; task < col_tasks; ++task) {
      layernorm_param_grads_cols(dweight, dbias, dout, inp, mean, rstd, N, task * kCols,
                                 std::min(C, (task + 1) * kCols), C, mode);
    }
    // The barrier ending the loop above: every row of dinp is final.
    if (dinp_sum != nullptr) {
#pragma omp for schedule(static)
      for (int task = 0; task < col_tasks; ++task) {
        column_sums(dinp_sum, dinp, N, task * kCols, std::min(C, (task + 1) * kCols), C, mode);
      }
    }
  }
}

template void layernorm_forward<float>(float*, float*, float*, const float*, const float*,
                                       const float*, int, int);
template void layernorm_forward<double>(double*, double*, double*, const double*, const double*,
                                        const double*, int, int);
template void layernorm_backward<float>(float*, float*, float*, float*, const float*, const float*,
                                        const float*, const float*, const float*, int, int,
                                        GradMode);
template void layernorm_backward<double>(double*, double*, double*, double*, const double*,
                                         const double*, const double*, const double*, const double*,
                                         int, int, GradMode);

}  // namespace accum::kernels::cpu
