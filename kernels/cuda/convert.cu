// kernels/cuda/convert.cu — dtype conversions between fp32 and bf16 (round to nearest even).
//
//   f32_to_bf16: dst(n, bf16) = rn(src(n, fp32))   (master -> working copy, uploads)
//   bf16_to_f32: dst(n, fp32) = src(n, bf16)       (read-back of activations, tests)
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/ops.h"

namespace accum::kernels::cuda {
namespace {

struct F32ToBf16 {
  bf16* dst;
  const float* src;
  __device__ void operator()(size_t i) const { dst[i] = to_bf16(src[i]); }
  __device__ void vec(size_t i) const {
    Packed128<float> lo = load128(src + i), hi = load128(src + i + 4);
    Packed128<bf16> out;
    for (int k = 0; k < 4; ++k) {
      out[k] = to_bf16(lo[k]);
      out[k + 4] = to_bf16(hi[k]);
    }
    store128(dst + i, out);
  }
};

struct Bf16ToF32 {
  float* dst;
  const bf16* src;
  __device__ void operator()(size_t i) const { dst[i] = to_f32(src[i]); }
  __device__ void vec(size_t i) const {
    Packed128<bf16> in = load128(src + i);
    Packed128<float> lo, hi;
    for (int k = 0; k < 4; ++k) {
      lo[k] = to_f32(in[k]);
      hi[k] = to_f32(in[k + 4]);
    }
    store128(dst + i, lo);
    store128(dst + i + 4, hi);
  }
};

}  // namespace

void f32_to_bf16(bf16* dst, const float* src, size_t n, cudaStream_t stream) {
  launch_elementwise(n, aligned16(dst) && aligned16(src), F32ToBf16{dst, src}, stream,
                     "f32_to_bf16");
}

void bf16_to_f32(float* dst, const bf16* src, size_t n, cudaStream_t stream) {
  launch_elementwise(n, aligned16(dst) && aligned16(src), Bf16ToF32{dst, src}, stream,
                     "bf16_to_f32");
}

}  // namespace accum::kernels::cuda
