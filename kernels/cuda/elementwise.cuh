// kernels/cuda/elementwise.cuh — launch helper for element-wise bf16 ops.
// Thread i owns elements [8i, 8i+8): a full group moves as 16-byte Packed128 loads when
// every pointer is 16-byte aligned; the ragged tail (n % 8) and unaligned views go
// element by element. `Op` is a device functor: void operator()(size_t i) const for the
// scalar path and void vec(size_t i) const for the 8-wide group starting at i.
#pragma once

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common.cuh"

namespace accum::kernels::cuda {

template <bool kVector, typename Op>
__global__ void elementwise_kernel(size_t n, Op op) {
  const size_t first = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 8;
  if (first >= n) return;
  if (kVector && first + 8 <= n) {
    op.vec(first);
  } else {
    for (size_t i = first; i < n && i < first + 8; ++i) op(i);
  }
}

template <typename Op>
void launch_elementwise(size_t n, bool all_aligned, Op op, cudaStream_t stream, const char* name) {
  if (n == 0) return;
  const int block = 256;
  const size_t groups = ceil_div(n, static_cast<size_t>(8));
  const unsigned grid = static_cast<unsigned>(ceil_div(groups, static_cast<size_t>(block)));
  if (all_aligned) {
    elementwise_kernel<true><<<grid, block, 0, stream>>>(n, op);
  } else {
    elementwise_kernel<false><<<grid, block, 0, stream>>>(n, op);
  }
  check_cuda(cudaGetLastError(), name, __FILE__, __LINE__);
}

}  // namespace accum::kernels::cuda
