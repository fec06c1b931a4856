// kernels/cuda/cuda_check.cpp — the one place CUDA / cuBLAS failures become exceptions.
#include "kernels/cuda/cuda_check.h"

#include <stdexcept>
#include <string>

namespace accum::kernels::cuda {

void cuda_fatal(const char* call, const char* message, const char* file, int line) {
  throw std::runtime_error(std::string("CUDA back end: ") + file + ":" + std::to_string(line) +
                           ": " + call + " failed: " + message);
}

void check_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  // cublasLt has no string function of its own; cuBLAS status codes are shared.
  std::string message = "cuBLAS status " + std::to_string(static_cast<int>(status));
  switch (status) {
    case CUBLAS_STATUS_NOT_INITIALIZED:
      message += " (not initialized)";
      break;
    case CUBLAS_STATUS_ALLOC_FAILED:
      message += " (allocation failed)";
      break;
    case CUBLAS_STATUS_INVALID_VALUE:
      message += " (invalid value)";
      break;
    case CUBLAS_STATUS_ARCH_MISMATCH:
      message += " (architecture mismatch)";
      break;
    case CUBLAS_STATUS_EXECUTION_FAILED:
      message += " (execution failed)";
      break;
    case CUBLAS_STATUS_NOT_SUPPORTED:
      message += " (not supported)";
      break;
    case CUBLAS_STATUS_INTERNAL_ERROR:
      message += " (internal error)";
      break;
    default:
      break;
  }
  cuda_fatal(call, message.c_str(), file, line);
}

}  // namespace accum::kernels::cuda
