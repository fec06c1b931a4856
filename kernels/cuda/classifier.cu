// kernels/cuda/classifier.cu — fused softmax + cross-entropy + dlogits (CPU twin:
// kernels/cpu/crossentropy.cpp, op crossentropy_forward_backward).
//
// For each row i of logits(N, V) with target y_i and mask_i (null mask = all counted):
//   lse_i     = max_v x_iv + log sum_v exp(x_iv - max_v x_iv)          (fp32)
//   losses[i] = mask_i ? lse_i - x_{i,y_i} : 0
//   dlogits[i, v] = mask_i ? dloss * (exp(x_iv - lse_i) - [v == y_i]) : 0   (written, not +=)
//
// One block per row, two passes over the row: (1) per-thread online max/sum, combined
// by fixed block trees (deterministic); (2) dlogits. No probability tensor is kept;
// dlogits may alias logits (each element is read, then written, by the same thread).
// V is often odd (50257), so rows are not 16-byte aligned: plain coalesced bf16 loads.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/ops.h"

namespace accum::kernels::cuda {
namespace {

constexpr int kThreads = 512;

__global__ void crossentropy_forward_backward_kernel(float* losses, bf16* dlogits,
                                                     const bf16* logits, const int32_t* targets,
                                                     const uint8_t* mask, float dloss, int V) {
  __shared__ float shared[kWarpSize];
  const int row = blockIdx.x;
  const size_t base = static_cast<size_t>(row) * V;
  const bool counted = mask == nullptr || mask[row] != 0;
  if (!counted) {
    if (threadIdx.x == 0) losses[row] = 0.f;
    if (dlogits != nullptr) {
      for (int v = threadIdx.x; v < V; v += kThreads) dlogits[base + v] = to_bf16(0.f);
    }
    return;
  }
  // Pass 1: thread-local online softmax statistics.
  float local_max = -INFINITY, local_sum = 0.f;
  for (int v = threadIdx.x; v < V; v += kThreads) {
    const float x = to_f32(logits[base + v]);
    if (x > local_max) {
      local_sum = local_sum * expf(local_max - x) + 1.f;  // rescale the old sum, add exp(0)
      local_max = x;
    } else {
      local_sum += expf(x - local_max);
    }
  }
  const float row_max = block_max(local_max, shared);
  const float scaled = local_max == -INFINITY ? 0.f : local_sum * expf(local_max - row_max);
  const float row_sum = block_sum(scaled, shared);
  const float lse = row_max + logf(row_sum);
  const int target = targets[row];
  const bool valid_target = target >= 0 && target < V;
  if (threadIdx.x == 0) {
    // An out-of-range target cannot be reported from the device: make the loss NaN.
    losses[row] = valid_target ? lse - to_f32(logits[base + target]) : NAN;
  }
  __syncthreads();  // the target logit is read above before dlogits (maybe == logits) is written
  if (dlogits == nullptr) return;
  // Pass 2: dlogits = dloss * (softmax - onehot).
  for (int v = threadIdx.x; v < V; v += kThreads) {
    const float p = expf(to_f32(logits[base + v]) - lse);
    const float indicator = v == target ? 1.f : 0.f;
    dlogits[base + v] = to_bf16(dloss * (p - indicator));
  }
}

}  // namespace

void crossentropy_forward_backward(float* losses, bf16* dlogits, const bf16* logits,
                                   const int32_t* targets, const uint8_t* mask, float dloss, int N,
                                   int V, cudaStream_t stream) {
  if (N == 0) return;
  crossentropy_forward_backward_kernel<<<N, kThreads, 0, stream>>>(losses, dlogits, logits, targets,
                                                                   mask, dloss, V);
  CUDA_CHECK_LAUNCH("crossentropy_forward_backward_kernel");
}

}  // namespace accum::kernels::cuda
