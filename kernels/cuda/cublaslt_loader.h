// kernels/cuda/cublaslt_loader.h — cuBLASLt is loaded when the CUDA back end starts, not when
// the worker does.
//
// Linked the usual way, libcublasLt makes every process that links it map and relocate it at
// start: about 150 MB resident (its relocated tables and what its initializers allocate)
// before main(), in every rank of a CPU job too, and a host without cuBLASLt could not
// start the worker at all. So nothing links it: cublaslt_loader.cpp defines the
// cublasLt* functions matmul.cpp calls, and each forwards to the library, opened (dlopen)
// the first time one is called or load_cublaslt() is. Under the SIMT emulator the
// emulator's cuBLASLt (tests/simt/cublaslt.cpp) is linked in instead and nothing is loaded.
#pragma once

#include <string>

namespace accum::kernels::cuda {

// The library load_cublaslt() opens: $ACCUM_CUBLASLT_LIBRARY when set (a path, or a name for
// the dynamic loader to search), else "libcublasLt.so.<the cuBLAS major this build was
// compiled against>", found like any shared library (LD_LIBRARY_PATH, the binary's RUNPATH,
// ld.so.cache).
std::string cublaslt_library_name();

// Opens the library and resolves every function this back end calls, once per process
// (thread-safe; later calls return the first outcome). False when that failed, with `why`
// (if non-null) naming the library, the loader's error and what to do about it.
bool load_cublaslt(std::string* why);

// load_cublaslt(), throwing std::runtime_error with its reason when it fails.
void require_cublaslt();

}  // namespace accum::kernels::cuda
