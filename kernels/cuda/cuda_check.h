// kernels/cuda/cuda_check.h — every CUDA / cuBLAS call is checked and a failure names
// the call and file:line. Errors are fatal for the back end: they throw
// std::runtime_error (the worker turns it into a non-zero exit with that message);
// out-of-memory from cudaMalloc is reported separately as std::bad_alloc by alloc().
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace accum::kernels::cuda {

[[noreturn]] void cuda_fatal(const char* call, const char* message, const char* file, int line);

inline void check_cuda(cudaError_t err, const char* call, const char* file, int line) {
  if (err != cudaSuccess) cuda_fatal(call, cudaGetErrorString(err), file, line);
}
void check_cublas(cublasStatus_t status, const char* call, const char* file, int line);

}  // namespace accum::kernels::cuda

#define CUDA_CHECK(call) ::accum::kernels::cuda::check_cuda((call), #call, __FILE__, __LINE__)

// A kernel may take more than 48 KiB of dynamic shared memory only after its limit is
// raised (up to the device's opt-in maximum); call before launching it with `bytes`.
template <typename Kernel>
void allow_dynamic_shared(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(bytes)));
  }
}
#define CUBLAS_CHECK(call) ::accum::kernels::cuda::check_cublas((call), #call, __FILE__, __LINE__)
// After a <<<...>>> launch: reports bad launch configurations at the launch site.
#define CUDA_CHECK_LAUNCH(kernel_name) \
  ::accum::kernels::cuda::check_cuda(cudaGetLastError(), kernel_name, __FILE__, __LINE__)
