// kernels/cuda/cuda_backend.h — factory of the CUDA back end (bf16 activations, fp32
// master weights / gradients / Adam state). Plain C++: no CUDA headers leak from here,
// so the registry (kernels/backend_registry.cpp) compiles with the host compiler.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "kernels/backend.h"

namespace accum::kernels {

// Creates the CUDA back end on device `local_rank` (modulo the visible device count), with
// the spec's `options` (backend.h). Throws std::runtime_error naming file:line and the
// failing call when CUDA fails.
std::unique_ptr<Backend> make_cuda_backend(int local_rank, const BackendOptions& options = {});

// True when at least one CUDA device is visible; otherwise `why` (if non-null) says why,
// e.g. "no CUDA device visible (cudaGetDeviceCount: no CUDA-capable device is detected)".
bool cuda_device_available(std::string* why);

// Device memory in use (total - free, all processes) and in total on device
// `local_rank` % count, from cudaMemGetInfo: what the worker prints next to its memory
// arithmetic. False (outputs untouched) when no device is visible.
bool cuda_memory_info(int local_rank, size_t* used_bytes, size_t* total_bytes);

}  // namespace accum::kernels
