// kernels/cuda/cuda_backend.h — factory of the CUDA back end (bf16 activations, fp32
// master weights / gradients / Adam state). Plain C++: no CUDA headers leak from here,
// so the registry (kernels/backend_registry.cpp) compiles with the host compiler.
#pragma once

#include <memory>
#include <string>

#include "kernels/backend.h"

namespace accum::kernels {

// Creates the CUDA back end on device `local_rank` (modulo the visible device count).
// Throws std::runtime_error naming file:line and the failing call when CUDA fails.
std::unique_ptr<Backend> make_cuda_backend(int local_rank);

// True when at least one CUDA device is visible; otherwise `why` (if non-null) says why,
// e.g. "no CUDA device visible (cudaGetDeviceCount: no CUDA-capable device is detected)".
bool cuda_device_available(std::string* why);

}  // namespace accum::kernels
