// bench/gpu/naive_blas/naive_blas.cpp — reference GEMM (triple loop, double accumulation)
// behind naive_blas/cblas.h. Column-major calls are mapped onto row-major by the identity
// C^T = op(B)^T op(A)^T. Slow, but it only feeds the test oracle.
#include <cstddef>

#include "cblas.h"

namespace {

template <typename F>
void gemm_row_major(bool trans_a, bool trans_b, int M, int N, int K, F alpha, const F* A, int lda,
                    const F* B, int ldb, F beta, F* C, int ldc) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < N; ++j) {
      double sum = 0;
      for (int k = 0; k < K; ++k) {
        const F a = trans_a ? A[size_t(k) * lda + i] : A[size_t(i) * lda + k];
        const F b = trans_b ? B[size_t(j) * ldb + k] : B[size_t(k) * ldb + j];
        sum += double(a) * double(b);
      }
      F& c = C[size_t(i) * ldc + j];
      c = F(alpha * F(sum) + (beta == F(0) ? F(0) : beta * c));  // beta 0: C may hold NaN
    }
  }
}

template <typename F>
void gemm(CBLAS_ORDER order, CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int M, int N, int K,
          F alpha, const F* A, int lda, const F* B, int ldb, F beta, F* C, int ldc) {
  const bool ta = trans_a != CblasNoTrans, tb = trans_b != CblasNoTrans;
  if (order == CblasRowMajor) {
    gemm_row_major(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    gemm_row_major(tb, ta, N, M, K, alpha, B, ldb, A, lda, beta, C, ldc);
  }
}

}  // namespace

extern "C" {

void cblas_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int M, int N,
                 int K, float alpha, const float* A, int lda, const float* B, int ldb, float beta,
                 float* C, int ldc) {
  gemm(order, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void cblas_dgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int M, int N,
                 int K, double alpha, const double* A, int lda, const double* B, int ldb,
                 double beta, double* C, int ldc) {
  gemm(order, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

int openblas_get_num_threads(void) { return 1; }
void openblas_set_num_threads(int) {}

}  // extern "C"
