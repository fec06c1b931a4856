// adamw: PyTorch's AdamW (torch.optim.AdamW 1.13, single-tensor path), elementwise.
//
//   g = grads * grad_scale
//   p = p * (1 - lr * wd)                                   // decoupled weight decay
//   m = b1 m + (1 - b1) g                                   // exp_avg
//   v = b2 v + ((1 - b2) g) g                               // exp_avg_sq
//   p = p - ((lr / (1 - b1^t)) m) / (sqrt(v) / sqrt(1 - b2^t) + eps)
//
// This is backend.h's p -= lr (wd p + m_hat / (sqrt(v_hat) + eps)) written in
// PyTorch's operation order: the scalar factors (1 - lr wd, lr / bc1, sqrt(bc2))
// are computed in double like Python floats, then rounded to F once, as torch
// does for a float tensor.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd_math.h"

namespace accum::kernels::cpu {
namespace {

template <typename F>
struct AdamWFactors {
  F decay;            // 1 - lr * wd
  F one_minus_beta1;  // 1 - b1
  F one_minus_beta2;  // 1 - b2
  F beta1, beta2;
  F step_size;        // lr / (1 - b1^t)
  F bias_corr2_sqrt;  // sqrt(1 - b2^t)
  F eps, grad_scale;
};

// Runs in sub-blocks of kSub values: the sqrt of libm may set errno, which keeps
// GCC from vectorizing any loop that calls it, so only the sqrt loop is scalar and
// the two arithmetic loops around it vectorize (the sub-block stays in L1).
template <typename F>
ACCUM_CPU_CLONES void adamw_range(F* params, const F* grads, F* m, F* v, size_t begin, size_t end,
                                  const AdamWFactors<F>& f) {
  constexpr size_t kSub = 256;
  F v_sqrt[kSub];
  for (size_t sub = begin; sub < end; sub += kSub) {
    const size_t count = std::min(kSub, end - sub);
    F* ps = params + sub;
    const F* gs = grads + sub;
    F* ms = m + sub;
    F* vs = v + sub;
#pragma omp simd
    for (size_t i = 0; i < count; ++i) {
      const F g = gs[i] * f.grad_scale;
      ms[i] = ms[i] * f.beta1 + f.one_minus_beta1 * g;
      vs[i] = vs[i] * f.beta2 + (f.one_minus_beta2 * g) * g;
    }
    for (size_t i = 0; i < count; ++i) v_sqrt[i] = std::sqrt(vs[i]);
#pragma omp simd
    for (size_t i = 0; i < count; ++i) {
      const F denom = v_sqrt[i] / f.bias_corr2_sqrt + f.eps;
      ps[i] = ps[i] * f.decay + ((-f.step_size) * ms[i]) / denom;
    }
  }
}

}  // namespace

template <typename F>
void adamw_update(F* params, const F* grads, F* m, F* v, size_t n, const AdamWParams& hp) {
  const double lr = hp.lr;
  const double beta1 = hp.beta1;
  const double beta2 = hp.beta2;
  const double bias_corr1 = 1.0 - std::pow(beta1, hp.step);
  const double bias_corr2 = 1.0 - std::pow(beta2, hp.step);
  const AdamWFactors<F> factors{
      .decay = F(1.0 - lr * double(hp.weight_decay)),
      .one_minus_beta1 = F(1.0 - beta1),
      .one_minus_beta2 = F(1.0 - beta2),
      .beta1 = F(beta1),
      .beta2 = F(beta2),
      .step_size = F(lr / bias_corr1),
      .bias_corr2_sqrt = F(std::sqrt(bias_corr2)),
      .eps = F(hp.eps),
      .grad_scale = F(hp.grad_scale),
  };
  constexpr size_t kChunk = 1 << 14;
  const ptrdiff_t chunks = static_cast<ptrdiff_t>((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static) if (chunks >= 2)
  for (ptrdiff_t chunk = 0; chunk < chunks; ++chunk) {
    const size_t begin = size_t(chunk) * kChunk;
    adamw_range(params, grads, m, v, begin, std::min(n, begin + kChunk), factors);
  }
}

template void adamw_update<float>(float*, const float*, float*, float*, size_t, const AdamWParams&);
template void adamw_update<double>(double*, const double*, double*, double*, size_t,
                                   const AdamWParams&);

}  // namespace accum::kernels::cpu
