// kernels/cuda/cuda_common.cuh — device helpers shared by the .cu op files:
// bf16 conversions, 16-byte vector loads (Packed128), deterministic warp/block sums.
// Reductions here are fixed shuffle trees: the same inputs give the same bits.
#pragma once

// Fully unrolls the loop that follows under nvcc (a register array indexed by its counter
// must stay in registers); nothing elsewhere (the SIMT emulator's g++).
#if defined(__CUDACC__)
#define ACCUM_UNROLL _Pragma("unroll")
#else
#define ACCUM_UNROLL
#endif

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace accum::kernels::cuda {

using bf16 = __nv_bfloat16;

constexpr int kWarpSize = 32;
// exp(x) = exp2(x log2 e) and ln(x) = log2(x) ln 2: softmax kernels fold the scale into one
// fma and take every exponential as one ex2.
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__host__ __device__ inline int ceil_div(int a, int b) { return (a + b - 1) / b; }
__host__ __device__ inline size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

__device__ inline float to_f32(bf16 x) { return __bfloat162float(x); }
__device__ inline float to_f32(float x) { return x; }
__device__ inline bf16 to_bf16(float x) { return __float2bfloat16_rn(x); }

// A vector access of `bytes` at `ptr` must be aligned to its size, or a GPU faults; the SIMT
// emulator (tests/simt), on a CPU that does not, checks it here. Nothing under nvcc.
#if defined(ACCUM_SIMT_EMULATION)
#define ACCUM_VECTOR_ACCESS(ptr, bytes) ::accum::simt::check_vector_access((ptr), (bytes))
#else
#define ACCUM_VECTOR_ACCESS(ptr, bytes) ((void)0)
#endif

// 16 bytes of T (8 bf16 or 4 float) moved with one vector load/store.
// REQUIRES: the address is 16-byte aligned.
template <typename T>
struct alignas(16) Packed128 {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
  __device__ T& operator[](int i) { return v[i]; }
  __device__ const T& operator[](int i) const { return v[i]; }
};

template <typename T>
__device__ inline Packed128<T> load128(const T* ptr) {
  ACCUM_VECTOR_ACCESS(ptr, 16);
  return *reinterpret_cast<const Packed128<T>*>(ptr);
}
template <typename T>
__device__ inline void store128(T* ptr, const Packed128<T>& value) {
  ACCUM_VECTOR_ACCESS(ptr, 16);
  *reinterpret_cast<Packed128<T>*>(ptr) = value;
}

// True when every pointer is 16-byte aligned, so a kernel can take the Packed128 path.
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

__device__ inline float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
__device__ inline double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
__device__ inline float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, <= 1024); every thread gets the
// result. `shared` holds >= 32 values. Fixed order: warp trees, then warp 0 over warps.
template <typename T>
__device__ inline T block_sum(T v, T* shared) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int num_warps = blockDim.x / kWarpSize;
  v = warp_sum(v);
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T total = lane < num_warps ? shared[lane] : T(0);
  return warp_sum(total);
}

__device__ inline float block_max(float v, float* shared) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int num_warps = blockDim.x / kWarpSize;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float total = lane < num_warps ? shared[lane] : -INFINITY;
  return warp_max(total);
}

}  // namespace accum::kernels::cuda
