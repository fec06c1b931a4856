// kernels/cuda/column_sum.cu — bias gradient of a linear layer:
//   dbias(OC) (+)= sum_{rows} dout(N, OC)      (+= for GradMode::kAdd; rows ld apart)
// through the deterministic two-stage column reduction of column_reduce.cuh; and
//   add_f32: dst(n) += src(n), for a bias gradient cuBLASLt's BGRADA epilogue wrote.
#include "kernels/cuda/column_reduce.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"

namespace accum::kernels::cuda {
namespace {

struct RowValue {
  const bf16* in;
  int ld;  // elements from one row to the next
  template <int W>
  __device__ void operator()(int row, int col, float (&acc)[1][W]) const {
    const bf16* p = in + static_cast<size_t>(row) * ld + col;
    if constexpr (W == 8) {
      const Packed128<bf16> x = load128(p);
      for (int j = 0; j < 8; ++j) acc[0][j] += to_f32(x[j]);
    } else {
      for (int j = 0; j < W; ++j) acc[0][j] += to_f32(p[j]);
    }
  }
};

__global__ void add_f32_kernel(float* dst, const float* src, size_t n) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] += src[i];
}

}  // namespace

void add_f32(float* dst, const float* src, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  constexpr int kBlock = 256;
  add_f32_kernel<<<static_cast<unsigned>(ceil_div(n, static_cast<size_t>(kBlock))), kBlock, 0,
                   stream>>>(dst, src, n);
  CUDA_CHECK_LAUNCH("add_f32_kernel");
}

void column_sum(float* out, const bf16* in, int rows, int cols, int ld, GradMode mode,
                DeviceScratch& scratch, cudaStream_t stream) {
  ColumnOutputs<1> outputs{{out}};
  column_reduce<1>(outputs, rows, cols, RowValue{in, ld}, aligned16(in) && ld % 8 == 0, mode,
                   scratch, stream);
}

}  // namespace accum::kernels::cuda
