// matmul: a linear layer on OpenBLAS GEMM, for both weight layouts.
//
//   kInOut (HF Conv1D, W(C,OC)):  out(N,OC) = inp(N,C) @ W + bias
//   kOutIn (tied LM head, W(OC,C)): out(N,OC) = inp(N,C) @ W^T + bias
//   backward (every output +=):
//     dinp(N,C)  += dout(N,OC) @ W^T            (kInOut)  | dout @ W       (kOutIn)
//     dW         += inp^T @ dout  -> (C,OC)     (kInOut)  | dout^T @ inp -> (OC,C) (kOutIn)
//     dbias(OC)  += sum_rows dout
//
// The forward writes bias rows first and lets GEMM add onto them (beta = 1) when
// there is a bias; the backward GEMMs use beta = 1 to add straight into the
// gradients, so no temporaries exist. dbias is parallel over column chunks that
// walk the rows in order (deterministic). OpenBLAS threads the GEMMs itself.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd_math.h"

namespace accum::kernels::cpu {

template <typename F>
void matmul_forward(F* out, const F* inp, const F* weight, const F* bias, int N, int C, int OC,
                    WeightLayout layout) {
  if (bias != nullptr) {
#pragma omp parallel for schedule(static) if (worth_parallel(size_t(N) * OC, 1 << 15))
    for (int row = 0; row < N; ++row) {
      std::memcpy(out + size_t(row) * OC, bias, sizeof(F) * OC);
    }
  }
  const F beta = bias != nullptr ? F(1) : F(0);
  if (layout == WeightLayout::kInOut) {
    gemm(false, false, N, OC, C, F(1), inp, C, weight, OC, beta, out, OC);
  } else {
    gemm(false, true, N, OC, C, F(1), inp, C, weight, C, beta, out, OC);
  }
}

template <typename F>
void matmul_backward(F* dinp, F* dweight, F* dbias, const F* dout, const F* inp, const F* weight,
                     int N, int C, int OC, WeightLayout layout) {
  if (layout == WeightLayout::kInOut) {
    if (dinp != nullptr) gemm(false, true, N, C, OC, F(1), dout, OC, weight, OC, F(1), dinp, C);
    gemm(true, false, C, OC, N, F(1), inp, C, dout, OC, F(1), dweight, OC);
  } else {
    if (dinp != nullptr) gemm(false, false, N, C, OC, F(1), dout, OC, weight, C, F(1), dinp, C);
    gemm(true, false, OC, C, N, F(1), dout, OC, inp, C, F(1), dweight, C);
  }
  if (dbias == nullptr) return;
  constexpr int kCols = 64;
  const int col_tasks = (OC + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (worth_parallel(size_t(N) * OC, 1 << 15))
  for (int task = 0; task < col_tasks; ++task) {
    const int c0 = task * kCols;
    const int c1 = std::min(OC, c0 + kCols);
    for (int row = 0; row < N; ++row) {
      const F* d = dout + size_t(row) * OC;
#pragma omp simd
      for (int c = c0; c < c1; ++c) dbias[c] += d[c];
    }
  }
}

template void matmul_forward<float>(float*, const float*, const float*, const float*, int, int, int,
                                    WeightLayout);
template void matmul_forward<double>(double*, const double*, const double*, const double*, int, int,
                                     int, WeightLayout);
template void matmul_backward<float>(float*, float*, float*, const float*, const float*,
                                     const float*, int, int, int, WeightLayout);
template void matmul_backward<double>(double*, double*, double*, const double*, const double*,
                                      const double*, int, int, int, WeightLayout);

}  // namespace accum::kernels::cpu
