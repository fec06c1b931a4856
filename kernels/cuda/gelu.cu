// kernels/cuda/gelu.cu — tanh-approximated GELU (CPU twin: kernels/cpu/gelu.cpp).
//
//   forward:  out = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   backward: dinp = dout * (0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3*0.044715
//   x^2)), written; in place (dinp == dout) for the fused matmul_gelu_backward's fallback
//
// bf16 in/out, arithmetic in fp32; 16-byte vector access via elementwise.cuh.
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/ops.h"

namespace accum::kernels::cuda {
namespace {

constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluCubic = 0.044715f;

__device__ inline float gelu(float x) {
  const float u = kGeluScale * (x + kGeluCubic * x * x * x);
  return 0.5f * x * (1.f + tanhf(u));
}

__device__ inline float gelu_grad(float x) {
  const float u = kGeluScale * (x + kGeluCubic * x * x * x);
  const float tanh_u = tanhf(u);
  const float sech2 = 1.f - tanh_u * tanh_u;
  return 0.5f * (1.f + tanh_u) + 0.5f * x * sech2 * kGeluScale * (1.f + 3.f * kGeluCubic * x * x);
}

struct GeluForward {
  bf16* out;
  const bf16* inp;
  __device__ void operator()(size_t i) const { out[i] = to_bf16(gelu(to_f32(inp[i]))); }
  __device__ void vec(size_t i) const {
    Packed128<bf16> x = load128(inp + i), y;
    for (int k = 0; k < 8; ++k) y[k] = to_bf16(gelu(to_f32(x[k])));
    store128(out + i, y);
  }
};

// dinp = dout * gelu'(inp), written. In place (dinp == dout, the fallback of
// matmul_gelu_backward when cuBLASLt has no DGELU plan) each element is read before it is
// written. As kernels/cpu/gelu.cpp.
struct GeluBackward {
  bf16* dinp;
  const bf16* inp;
  const bf16* dout;
  __device__ void operator()(size_t i) const {
    dinp[i] = to_bf16(to_f32(dout[i]) * gelu_grad(to_f32(inp[i])));
  }
  __device__ void vec(size_t i) const {
    Packed128<bf16> x = load128(inp + i), g = load128(dout + i);
    for (int k = 0; k < 8; ++k) g[k] = to_bf16(to_f32(g[k]) * gelu_grad(to_f32(x[k])));
    store128(dinp + i, g);
  }
};

}  // namespace

void gelu_forward(bf16* out, const bf16* inp, size_t n, cudaStream_t stream) {
  launch_elementwise(n, aligned16(out) && aligned16(inp), GeluForward{out, inp}, stream,
                     "gelu_forward");
}

void gelu_backward(bf16* dinp, const bf16* inp, const bf16* dout, size_t n, cudaStream_t stream) {
  launch_elementwise(n, aligned16(dinp) && aligned16(inp) && aligned16(dout),
                     GeluBackward{dinp, inp, dout}, stream, "gelu_backward");
}

void gelu_backward_inplace(bf16* d, const bf16* pre, size_t n, cudaStream_t stream) {
  launch_elementwise(n, aligned16(d) && aligned16(pre), GeluBackward{d, pre, d}, stream,
                     "gelu_backward_inplace");
}

}  // namespace accum::kernels::cuda
