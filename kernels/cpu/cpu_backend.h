// kernels/cpu/cpu_backend.h — the fp32 CPU back end (OpenBLAS + OpenMP).
#pragma once

#include <memory>

#include "kernels/backend.h"

namespace accum::kernels {

// Creates the CPU back end: act_bytes() == 4, the working copy IS the fp32 master,
// alloc() returns zero-filled 64-byte-aligned host memory. Ops run synchronously
// on the calling thread plus OpenMP/OpenBLAS worker threads.
std::unique_ptr<Backend> make_cpu_backend();

}  // namespace accum::kernels
