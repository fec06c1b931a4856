// cuBLASLt opened at run time (kernels/cuda/cublaslt_loader.h), on a machine with or without
// a GPU: the library and its functions are host code, so loading it, its version and its
// host-only descriptor calls work here; only a matmul needs a device (the gpu tests).
#include "kernels/cuda/cublaslt_loader.h"

#include <cublasLt.h>
#include <gtest/gtest.h>

#include <string>

namespace accum::kernels::cuda {
namespace {

TEST(CublasLtLoader, LoadsTheLibraryAndForwardsItsHostCalls) {
  std::string why;
  ASSERT_TRUE(load_cublaslt(&why)) << why;
  EXPECT_EQ(cublaslt_library_name(), "libcublasLt.so." + std::to_string(CUBLAS_VER_MAJOR));
  // The version of the library loaded, through the forwarding definition: its major is the
  // one this build was compiled against (cuBLASLt's version is major*10000 + minor*100 + patch).
  const size_t version = cublasLtGetVersion();
  EXPECT_EQ(version / 10000, static_cast<size_t>(CUBLAS_VER_MAJOR)) << version;

  // A descriptor made and read back through the library: the forwarded arguments arrive.
  cublasLtMatmulDesc_t desc = nullptr;
  ASSERT_EQ(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
  ASSERT_NE(desc, nullptr);
  const cublasOperation_t transpose = CUBLAS_OP_T;
  EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose,
                                           sizeof(transpose)),
            CUBLAS_STATUS_SUCCESS);
  // The library checks what it is given: a value of the wrong size is refused.
  EXPECT_NE(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, 1),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasLtMatmulDescDestroy(desc), CUBLAS_STATUS_SUCCESS);

  cublasLtMatrixLayout_t layout = nullptr;
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&layout, CUDA_R_16BF, 64, 32, 64), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasLtMatrixLayoutDestroy(layout), CUBLAS_STATUS_SUCCESS);
}

}  // namespace
}  // namespace accum::kernels::cuda
