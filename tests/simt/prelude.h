// tests/simt/prelude.h — force-included (g++ -include) before every kernels/cuda/*.cu that
// the SIMT emulator compiles as C++ (see simt.h): maps CUDA's device-side vocabulary onto
// the emulator. Nothing here is seen by nvcc.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "tests/simt/simt.h"

// Device code is ordinary host code here.
#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __forceinline__
#define __forceinline__ inline
#define __launch_bounds__(...)
// A block's threads are fibers of one OS thread and blocks run one after another on it, so
// a function-local `static thread_local` is one variable per running block, as __shared__ is.
#undef __shared__
#define __shared__ static thread_local

#define threadIdx (::accum::simt::thread_idx())
#define blockIdx (::accum::simt::block_idx())
#define blockDim (::accum::simt::block_dim())
#define gridDim (::accum::simt::grid_dim())

inline void __syncthreads() { ::accum::simt::sync_block(); }
[[noreturn]] inline void __trap() { ::accum::simt::trap(); }
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
  if (width != 32) ::accum::simt::trap();
  return ::accum::simt::shfl_xor(mask, value, lane_mask);
}
template <typename T>
inline T __shfl_sync(unsigned mask, T value, int src_lane, int width = 32) {
  if (width != 32) ::accum::simt::trap();
  return ::accum::simt::shfl(mask, value, src_lane);
}
// cuda_runtime.h offers this template to nvcc only.
template <typename... Params>
inline cudaError_t cudaFuncSetAttribute(void (*kernel)(Params...), cudaFuncAttribute attr,
                                        int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}
inline float __expf(float x) { return std::exp(x); }
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
using std::max;
using std::min;
