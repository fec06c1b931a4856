// kernels/cuda/column_sum.cu — bias gradient of a linear layer:
//   dbias(OC) += sum_{rows} dout(N, OC)
// through the deterministic two-stage column reduction of column_reduce.cuh.
#include "kernels/cuda/column_reduce.cuh"
#include "kernels/cuda/ops.h"

namespace accum::kernels::cuda {
namespace {

struct RowValue {
  const bf16* in;
  int cols;
  __device__ void operator()(int row, int col, float (&acc)[1]) const {
    acc[0] += to_f32(in[static_cast<size_t>(row) * cols + col]);
  }
};

}  // namespace

void column_sum_add(float* out, const bf16* in, int rows, int cols, DeviceScratch& scratch,
                    cudaStream_t stream) {
  ColumnOutputs<1> outputs{{out}};
  column_reduce_add<1>(outputs, rows, cols, RowValue{in, cols}, scratch, stream);
}

}  // namespace accum::kernels::cuda
