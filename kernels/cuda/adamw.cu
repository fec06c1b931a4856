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

struct AdamWArgs {
  float lr, beta1, beta2, eps, weight_decay, grad_scale, beta1_correction, beta2_correction;
};

// The update of one element (the formulas above); p, m, v are updated in place.
__device__ inline void adamw_element(float& p, float& m, float& v, float grad, const AdamWArgs& a) {
  const float g = grad * a.grad_scale;
  m = a.beta1 * m + (1.f - a.beta1) * g;
  v = a.beta2 * v + (1.f - a.beta2) * g * g;
  const float m_hat = m / a.beta1_correction;
  const float v_hat = v / a.beta2_correction;
  p -= a.lr * (a.weight_decay * p + m_hat / (sqrtf(v_hat) + a.eps));
}

// kVec = 4: n % 4 == 0 and 16-byte aligned fp32 arrays (8-byte aligned bf16 copy): every
// access is a vector of 4, so the pass runs near the memory bandwidth.
template <int kVec>
__global__ void adamw_kernel(float* master, bf16* working, const float* grads, float* m_state,
                             float* v_state, size_t n, AdamWArgs args) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x * kVec;
  for (size_t i = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kVec; i < n;
       i += stride) {
    if constexpr (kVec == 4) {
      float4 p = *reinterpret_cast<const float4*>(master + i);
      float4 m = *reinterpret_cast<const float4*>(m_state + i);
      float4 v = *reinterpret_cast<const float4*>(v_state + i);
      const float4 g = *reinterpret_cast<const float4*>(grads + i);
      adamw_element(p.x, m.x, v.x, g.x, args);
      adamw_element(p.y, m.y, v.y, g.y, args);
      adamw_element(p.z, m.z, v.z, g.z, args);
      adamw_element(p.w, m.w, v.w, g.w, args);
      *reinterpret_cast<float4*>(master + i) = p;
      *reinterpret_cast<float4*>(m_state + i) = m;
      *reinterpret_cast<float4*>(v_state + i) = v;
      if (working != nullptr) {
        auto pair = [](float lo, float hi) {  // two bf16, the lower index in the low half
          return static_cast<unsigned>(__bfloat16_as_ushort(to_bf16(lo))) |
                 (static_cast<unsigned>(__bfloat16_as_ushort(to_bf16(hi))) << 16);
        };
        *reinterpret_cast<uint2*>(working + i) = make_uint2(pair(p.x, p.y), pair(p.z, p.w));
      }
    } else {
      float p = master[i], m = m_state[i], v = v_state[i];
      adamw_element(p, m, v, grads[i], args);
      m_state[i] = m;
      v_state[i] = v;
      master[i] = p;
      if (working != nullptr) working[i] = to_bf16(p);
    }
  }
}

}  // namespace

void adamw_update(float* master, bf16* working, const float* grads, float* m, float* v, size_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay,
                  float grad_scale, float beta1_correction, float beta2_correction,
                  cudaStream_t stream) {
  if (n == 0) return;
  const AdamWArgs args{
      lr, beta1, beta2, eps, weight_decay, grad_scale, beta1_correction, beta2_correction};
  const bool vector = n % 4 == 0 && aligned16(master) && aligned16(grads) && aligned16(m) &&
                      aligned16(v) && (reinterpret_cast<uintptr_t>(working) & 7u) == 0;
  const int block = 256;
  const size_t max_grid = 65535;
  const size_t per_block = static_cast<size_t>(block) * (vector ? 4 : 1);
  const unsigned grid = static_cast<unsigned>(std::min(max_grid, ceil_div(n, per_block)));
  if (vector) {
    adamw_kernel<4><<<grid, block, 0, stream>>>(master, working, grads, m, v, n, args);
  } else {
    adamw_kernel<1><<<grid, block, 0, stream>>>(master, working, grads, m, v, n, args);
  }
  CUDA_CHECK_LAUNCH("adamw_kernel");
}

}  // namespace accum::kernels::cuda
