// bench/gpu/naive_blas/cblas.h — the few CBLAS entry points kernels/cpu uses, for GPU hosts
// without OpenBLAS. Used ONLY by the standalone GPU build (bench/gpu/CMakeLists.txt) when no
// BLAS is found: the CPU back end is then a slow but exact fp32 oracle for the gpu tests.
// Same names and enum values as the reference CBLAS, so kernels/cpu compiles unchanged.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112, CblasConjTrans = 113 };

// C = alpha * op(A) @ op(B) + beta * C   (M x N, inner dimension K)
void cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE trans_a, enum CBLAS_TRANSPOSE trans_b,
                 int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
                 float beta, float* C, int ldc);
void cblas_dgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE trans_a, enum CBLAS_TRANSPOSE trans_b,
                 int M, int N, int K, double alpha, const double* A, int lda, const double* B,
                 int ldb, double beta, double* C, int ldc);

// Thread control of OpenBLAS; the naive GEMM is single-threaded per call.
int openblas_get_num_threads(void);
void openblas_set_num_threads(int threads);

#ifdef __cplusplus
}
#endif
