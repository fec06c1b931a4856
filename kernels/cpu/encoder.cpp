// encoder: token + position embedding.
//
//   forward:  out(B,T,C) = wte(V,C)[tokens[b,t], :] + wpe(maxT,C)[t, :]
//   backward: dwte[tokens[b,t], :] += dout[b,t,:];  dwpe[t,:] += dout[b,t,:]
//
// The backward scatters into dwte where tokens repeat, so it is parallel over
// column chunks: each thread owns C-columns and visits the rows in (b,t) order,
// which keeps the sum order fixed and independent of the thread count.
#include <algorithm>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd_math.h"

namespace accum::kernels::cpu {

template <typename F>
void encoder_forward(F* out, const int32_t* tokens, const F* wte, const F* wpe, int B, int T,
                     int C) {
  const int rows = B * T;
#pragma omp parallel for schedule(static) if (worth_parallel(size_t(rows) * C, 1 << 14))
  for (int row = 0; row < rows; ++row) {
    const int t = row % T;
    const F* tok_emb = wte + size_t(tokens[row]) * C;
    const F* pos_emb = wpe + size_t(t) * C;
    F* o = out + size_t(row) * C;
#pragma omp simd
    for (int c = 0; c < C; ++c) o[c] = tok_emb[c] + pos_emb[c];
  }
}

template <typename F>
void encoder_backward(F* dwte, F* dwpe, const F* dout, const int32_t* tokens, int B, int T, int C) {
  constexpr int kCols = 64;  // columns per task: a cache line multiple, long simd runs
  const int chunks = (C + kCols - 1) / kCols;
  const int rows = B * T;
#pragma omp parallel for schedule(static) if (worth_parallel(size_t(rows) * C, 1 << 14))
  for (int chunk = 0; chunk < chunks; ++chunk) {
    const int c0 = chunk * kCols;
    const int c1 = std::min(C, c0 + kCols);
    for (int row = 0; row < rows; ++row) {
      const F* d = dout + size_t(row) * C;
      F* dtok = dwte + size_t(tokens[row]) * C;
      F* dpos = dwpe + size_t(row % T) * C;
#pragma omp simd
      for (int c = c0; c < c1; ++c) {
        dtok[c] += d[c];
        dpos[c] += d[c];
      }
    }
  }
}

template void encoder_forward<float>(float*, const int32_t*, const float*, const float*, int, int,
                                     int);
template void encoder_forward<double>(double*, const int32_t*, const double*, const double*, int,
                                      int, int);
template void encoder_backward<float>(float*, float*, const float*, const int32_t*, int, int, int);
template void encoder_backward<double>(double*, double*, const double*, const int32_t*, int, int,
                                       int);

}  // namespace accum::kernels::cpu
