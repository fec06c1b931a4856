// residual: out(n) = a(n) + b(n). Memory bound; out may alias a or b.
// (Its backward is the identity on both inputs: the model adds dout into both
// branches itself, so there is no residual_backward op.)
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd_math.h"

namespace accum::kernels::cpu {

template <typename F>
void residual_forward(F* out, const F* a, const F* b, size_t n) {
  const ptrdiff_t count = static_cast<ptrdiff_t>(n);
#pragma omp parallel for simd schedule(static) if (worth_parallel(n, 1 << 15))
  for (ptrdiff_t i = 0; i < count; ++i) out[i] = a[i] + b[i];
}

template void residual_forward<float>(float*, const float*, const float*, size_t);
template void residual_forward<double>(double*, const double*, const double*, size_t);

}  // namespace accum::kernels::cpu
