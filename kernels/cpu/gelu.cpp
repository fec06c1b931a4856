// gelu: the tanh approximation used by GPT-2.
//
//   u = sqrt(2/pi) (x + 0.044715 x^3)
//   forward:  out = 0.5 x (1 + tanh(u))
//   backward: dinp  = dout * (0.5 (1 + tanh(u))
//                             + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2))
//   backward in place (the fused matmul_gelu_backward): d *= the same local gradient
//
// Elementwise; float uses the vectorized tanh_approx (simd_math.h). The range
// functions are compiled per ISA and called on static chunks of 4096 values.
#include <algorithm>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd_math.h"

namespace accum::kernels::cpu {
namespace {

constexpr double kGeluScale = 0.7978845608028654;  // sqrt(2/pi)
constexpr double kGeluCube = 0.044715;
constexpr size_t kChunk = 4096;

template <typename F>
ACCUM_CPU_CLONES void gelu_forward_range(F* out, const F* inp, size_t begin, size_t end) {
  const F s = F(kGeluScale);
  const F a = F(kGeluCube);
#pragma omp simd
  for (size_t i = begin; i < end; ++i) {
    const F x = inp[i];
    const F u = s * (x + a * x * x * x);
    out[i] = F(0.5) * x * (F(1) + tanh_approx(u));
  }
}

// kInPlace: d[i] *= gelu'(inp[i]) (d holds dout on entry); otherwise d[i] = gelu'(inp[i]) dout[i].
template <bool kInPlace, typename F>
ACCUM_CPU_CLONES void gelu_backward_range(F* d, const F* inp, const F* dout, size_t begin,
                                          size_t end) {
  const F s = F(kGeluScale);
  const F a = F(kGeluCube);
#pragma omp simd
  for (size_t i = begin; i < end; ++i) {
    const F x = inp[i];
    const F u = s * (x + a * x * x * x);
    const F th = tanh_approx(u);
    const F sech2 = F(1) - th * th;
    const F local_grad = F(0.5) * (F(1) + th) + x * F(0.5) * sech2 * s * (F(1) + F(3) * a * x * x);
    if constexpr (kInPlace) {
      d[i] = local_grad * d[i];
    } else {
      d[i] = local_grad * dout[i];
    }
  }
}

template <bool kInPlace, typename F>
void gelu_backward_chunks(F* d, const F* inp, const F* dout, size_t n) {
  const ptrdiff_t chunks = static_cast<ptrdiff_t>((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static) if (chunks >= 4)
  for (ptrdiff_t chunk = 0; chunk < chunks; ++chunk) {
    gelu_backward_range<kInPlace>(d, inp, dout, size_t(chunk) * kChunk,
                                  std::min(n, size_t(chunk + 1) * kChunk));
  }
}

}  // namespace

template <typename F>
void gelu_forward(F* out, const F* inp, size_t n) {
  const ptrdiff_t chunks = static_cast<ptrdiff_t>((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static) if (chunks >= 4)
  for (ptrdiff_t chunk = 0; chunk < chunks; ++chunk) {
    gelu_forward_range(out, inp, size_t(chunk) * kChunk, std::min(n, size_t(chunk + 1) * kChunk));
  }
}

template <typename F>
void gelu_backward(F* dinp, const F* inp, const F* dout, size_t n) {
  gelu_backward_chunks<false>(dinp, inp, dout, n);
}

template <typename F>
void gelu_backward_inplace(F* d, const F* inp, size_t n) {
  gelu_backward_chunks<true>(d, inp, static_cast<const F*>(nullptr), n);
}

template void gelu_forward<float>(float*, const float*, size_t);
template void gelu_forward<double>(double*, const double*, size_t);
template void gelu_backward<float>(float*, const float*, const float*, size_t);
template void gelu_backward<double>(double*, const double*, const double*, size_t);
template void gelu_backward_inplace<float>(float*, const float*, size_t);
template void gelu_backward_inplace<double>(double*, const double*, size_t);

}  // namespace accum::kernels::cpu
