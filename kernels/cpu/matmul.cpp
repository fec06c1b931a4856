// matmul: a linear layer on OpenBLAS GEMM, for both weight layouts.
//
//   kInOut (HF Conv1D, W(C,OC)):  out(N,OC) = inp(N,C) @ W + bias
//   kOutIn (tied LM head, W(OC,C)): out(N,OC) = inp(N,C) @ W^T + bias
//   backward (dinp written, parameter gradients += or, with GradMode::kWrite, =):
//     dinp(N,C)   = dout(N,OC) @ W^T            (kInOut)  | dout @ W       (kOutIn)
//     dW         += inp^T @ dout  -> (C,OC)     (kInOut)  | dout^T @ inp -> (OC,C) (kOutIn)
//     dbias(OC)  += sum_rows dout
// Rows of out (forward) and dout (backward) may be further apart than OC (out_ld, dout_ld: the
// logits of an odd vocabulary in a padded buffer); only their OC columns are touched.
//
// The forward writes bias rows first and lets GEMM add onto them (beta = 1) when
// there is a bias; the backward's dinp GEMM uses beta = 0 (written) and the weight
// gradient GEMMs beta = 1 to add straight into the gradients (beta = 0 to write them):
// no temporaries exist.
//
// Threading: OpenMP threads split each GEMM (rows of out/dinp, output channels of
// dW/dbias) and call OpenBLAS single-threaded, so the process has one thread pool:
// OpenBLAS's pthread pool never competes with OpenMP's for the cores. The whole
// backward is one parallel region. dbias walks the rows in order (deterministic).
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/ops.h"

namespace accum::kernels::cpu {

namespace {

// The share [begin, end) of `total` for thread `thread` of `threads`, in whole
// multiples of kAlign (GEMM micro-kernels like round panel edges).
struct Range {
  int begin, end;
};
Range thread_share(int total, int thread, int threads) {
  constexpr int kAlign = 16;
  const int units = (total + kAlign - 1) / kAlign;
  const int begin = std::min(total, units * thread / threads * kAlign);
  const int end = std::min(total, units * (thread + 1) / threads * kAlign);
  return {begin, end};
}

// Whether a GEMM of m*n*k multiply-adds is worth splitting over threads.
bool worth_splitting(size_t m, size_t n, size_t k) { return m * n * k >= (size_t(1) << 18); }

}  // namespace

template <typename F>
void matmul_forward(F* out, const F* inp, const F* weight, const F* bias, int N, int C, int OC,
                    WeightLayout layout, int out_ld) {
  out_ld = resolve_row_stride(out_ld, OC, "matmul_forward");
  const F beta = bias != nullptr ? F(1) : F(0);
  BlasSingleThread blas_single_thread;
#pragma omp parallel if (worth_splitting(N, C, OC))
  {
    const Range rows = thread_share(N, omp_get_thread_num(), omp_get_num_threads());
    if (rows.begin < rows.end) {
      F* out_rows = out + size_t(rows.begin) * out_ld;
      const F* inp_rows = inp + size_t(rows.begin) * C;
      const int count = rows.end - rows.begin;
      if (bias != nullptr) {
        for (int row = 0; row < count; ++row) {
          std::memcpy(out_rows + size_t(row) * out_ld, bias, sizeof(F) * OC);
        }
      }
      if (layout == WeightLayout::kInOut) {
        gemm(false, false, count, OC, C, F(1), inp_rows, C, weight, OC, beta, out_rows, out_ld);
      } else {
        gemm(false, true, count, OC, C, F(1), inp_rows, C, weight, C, beta, out_rows, out_ld);
      }
    }
  }
}

template <typename F>
void matmul_backward(F* dinp, F* dweight, F* dbias, const F* dout, const F* inp, const F* weight,
                     int N, int C, int OC, WeightLayout layout, GradMode mode, int dout_ld) {
  dout_ld = resolve_row_stride(dout_ld, OC, "matmul_backward");
  BlasSingleThread blas_single_thread;
  const F grad_beta = mode == GradMode::kAdd ? F(1) : F(0);
#pragma omp parallel if (worth_splitting(N, C, OC))
  {
    const int thread = omp_get_thread_num();
    const int threads = omp_get_num_threads();
    // dinp rows [r0, r1): dinp = dout @ W^T, all of W.
    const Range rows = thread_share(N, thread, threads);
    if (dinp != nullptr && rows.begin < rows.end) {
      const int count = rows.end - rows.begin;
      const F* dout_rows = dout + size_t(rows.begin) * dout_ld;
      F* dinp_rows = dinp + size_t(rows.begin) * C;
      if (layout == WeightLayout::kInOut) {
        gemm(false, true, count, C, OC, F(1), dout_rows, dout_ld, weight, OC, F(0), dinp_rows, C);
      } else {
        gemm(false, false, count, C, OC, F(1), dout_rows, dout_ld, weight, C, F(0), dinp_rows, C);
      }
    }
    // dW and dbias for output channels [o0, o1), summed over all rows.
    const Range outs = thread_share(OC, thread, threads);
    if (outs.begin < outs.end) {
      const int count = outs.end - outs.begin;
      if (dweight != nullptr && layout == WeightLayout::kInOut) {
        // dW(C,OC)[:, o0:o1] (+)= inp^T @ dout[:, o0:o1]
        gemm(true, false, C, count, N, F(1), inp, C, dout + outs.begin, dout_ld, grad_beta,
             dweight + outs.begin, OC);
      } else if (dweight != nullptr) {  // dW(OC,C)[o0:o1, :] (+)= dout[:, o0:o1]^T @ inp
        gemm(true, false, count, C, N, F(1), dout + outs.begin, dout_ld, inp, C, grad_beta,
             dweight + size_t(outs.begin) * C, C);
      }
      if (dbias != nullptr) {
        if (mode == GradMode::kWrite) std::fill(dbias + outs.begin, dbias + outs.end, F(0));
        for (int row = 0; row < N; ++row) {
          const F* d = dout + size_t(row) * dout_ld;
#pragma omp simd
          for (int c = outs.begin; c < outs.end; ++c) dbias[c] += d[c];
        }
      }
    }
  }
}

template void matmul_forward<float>(float*, const float*, const float*, const float*, int, int, int,
                                    WeightLayout, int);
template void matmul_forward<double>(double*, const double*, const double*, const double*, int, int,
                                     int, WeightLayout, int);
template void matmul_backward<float>(float*, float*, float*, const float*, const float*,
                                     const float*, int, int, int, WeightLayout, GradMode, int);
template void matmul_backward<double>(double*, double*, double*, const double*, const double*,
                                      const double*, int, int, int, WeightLayout, GradMode, int);

}  // namespace accum::kernels::cpu
