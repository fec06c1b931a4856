// kernels/cpu/blas.h — row-major GEMM on OpenBLAS for float and double (internal).
//
//   C(M,N) = alpha * op(A)(M,K) @ op(B)(K,N) + beta * C, op = transpose or not.
//
// BlasSingleThread pins OpenBLAS to one thread while OpenMP threads each make
// their own small GEMM calls (attention), so the two thread pools never stack.
#pragma once

#include <cblas.h>

namespace accum::kernels::cpu {

inline void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                 int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

inline void gemm(bool trans_a, bool trans_b, int M, int N, int K, double alpha, const double* A,
                 int lda, const double* B, int ldb, double beta, double* C, int ldc) {
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// Scope guard: OpenBLAS runs single-threaded while it lives. Not re-entrant.
class BlasSingleThread {
 public:
  BlasSingleThread() : saved_threads_(openblas_get_num_threads()) {
    if (saved_threads_ != 1) openblas_set_num_threads(1);
  }
  ~BlasSingleThread() {
    if (saved_threads_ != 1) openblas_set_num_threads(saved_threads_);
  }
  BlasSingleThread(const BlasSingleThread&) = delete;
  BlasSingleThread& operator=(const BlasSingleThread&) = delete;

 private:
  int saved_threads_;
};

}  // namespace accum::kernels::cpu
