// kernels/cuda/adamw.cu — fused AdamW over fp32 master weights (CPU twin: kernels/cpu/adamw.cpp).
// PyTorch semantics (bias-corrected moments, decoupled weight decay), all in fp32:
//
//   g = grads * grad_scale
//   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   m_hat = m / (1 - beta1^t);    v_hat = v / (1 - beta2^t)
//   p -= lr * (weight_decay * p + m_hat / (sqrt(v_hat) + eps))
//   working = bf16(p)   (if working != null: the copy the forward reads)
//
// The caller passes the bias corrections (1 - beta^t) computed in double on the host.
// One pass over memory: read g, m, v, p; write m, v, p and the bf16 copy.
#include <algorithm>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/ops.h"

namespace accum::kernels::cuda {
namespace {

__global__ void adamw_kernel(float* master, bf16* working, const float* grads, float* m_state,
                             float* v_state, size_t n, float lr, float beta1, float beta2,
                             float eps, float weight_decay, float grad_scale,
                             float beta1_correction, float beta2_correction) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float g = grads[i] * grad_scale;
    const float m = beta1 * m_state[i] + (1.f - beta1) * g;
    const float v = beta2 * v_state[i] + (1.f - beta2) * g * g;
    const float m_hat = m / beta1_correction;
    const float v_hat = v / beta2_correction;
    float p = master[i];
    p -= lr * (weight_decay * p + m_hat / (sqrtf(v_hat) + eps));
    m_state[i] = m;
    v_state[i] = v;
    master[i] = p;
    if (working != nullptr) working[i] = to_bf16(p);
  }
}

}  // namespace

void adamw_update(float* master, bf16* working, const float* grads, float* m, float* v, size_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay,
                  float grad_scale, float beta1_correction, float beta2_correction,
                  cudaStream_t stream) {
  if (n == 0) return;
  const int block = 256;
  const size_t max_grid = 65535;
  const unsigned grid =
      static_cast<unsigned>(std::min(max_grid, ceil_div(n, static_cast<size_t>(block))));
  adamw_kernel<<<grid, block, 0, stream>>>(master, working, grads, m, v, n, lr, beta1, beta2, eps,
                                           weight_decay, grad_scale, beta1_correction,
                                           beta2_correction);
  CUDA_CHECK_LAUNCH("adamw_kernel");
}

}  // namespace accum::kernels::cuda
