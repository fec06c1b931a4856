// crossentropy: fused softmax + cross-entropy + dlogits, with a per-target mask.
//
//   per row i of logits(N,V), with max_i = max_j l_ij, Z_i = sum_j exp(l_ij - max_i):
//     losses[i]  = mask_i ? log Z_i - (l_i,target_i - max_i) : 0      (= -log p_i,target)
//     dlogits_ij = mask_i ? dloss * (exp(l_ij - max_i) / Z_i - [j == target_i]) : 0
//
// Subtracting the row max keeps exp() in range (numerically stable). One read of
// the row for the max, one pass writing exp() into dlogits while summing Z, one
// scaling pass; dlogits may alias logits (each element is read before written,
// and the target logit is read first). Parallel over rows.
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd_math.h"

namespace accum::kernels::cpu {
namespace {

// Returns log Z - (l_target - max); writes dlogits row when `drow` is non-null.
template <typename F>
ACCUM_CPU_CLONES F crossentropy_row(F* drow, const F* row, int target, F dloss, int V) {
  const F target_logit = row[target];
  const F max_logit = lane_max(row, V);
  F acc[kLanes] = {};
  int j = 0;
  if (drow != nullptr) {
    for (; j + kLanes <= V; j += kLanes) {
      // All loads before all stores: stays correct, and vectorizes, when drow == row.
      F e[kLanes];
      for (int k = 0; k < kLanes; ++k) e[k] = row[j + k];
      for (int k = 0; k < kLanes; ++k) {
        e[k] = exp_approx(e[k] - max_logit);
        acc[k] += e[k];
      }
      for (int k = 0; k < kLanes; ++k) drow[j + k] = e[k];
    }
    for (int k = 0; j + k < V; ++k) {
      const F e = exp_approx(row[j + k] - max_logit);
      drow[j + k] = e;
      acc[k] += e;
    }
  } else {
    for (; j + kLanes <= V; j += kLanes) {
      for (int k = 0; k < kLanes; ++k) acc[k] += exp_approx(row[j + k] - max_logit);
    }
    for (int k = 0; j + k < V; ++k) acc[k] += exp_approx(row[j + k] - max_logit);
  }
  const F sum = combine_lanes(acc);
  if (drow != nullptr) {
    const F scale = dloss / sum;
#pragma omp simd
    for (int i = 0; i < V; ++i) drow[i] *= scale;
    drow[target] -= dloss;
  }
  return std::log(sum) - (target_logit - max_logit);
}

}  // namespace

template <typename F>
void crossentropy_forward_backward(F* losses, F* dlogits, const F* logits, const int32_t* targets,
                                   const uint8_t* mask, F dloss, int N, int V, int ld) {
  ld = resolve_row_stride(ld, V, "crossentropy_forward_backward");
  for (int i = 0; i < N; ++i) {
    const bool counted = mask == nullptr || mask[i] != 0;
    if (counted && (targets[i] < 0 || targets[i] >= V)) {
      throw std::invalid_argument("crossentropy_forward_backward: target " +
                                  std::to_string(targets[i]) + " at row " + std::to_string(i) +
                                  " is outside the vocabulary [0, " + std::to_string(V) + ")");
    }
  }
#pragma omp parallel for schedule(static) if (worth_parallel(size_t(N) * V, 1 << 14))
  for (int i = 0; i < N; ++i) {
    const bool counted = mask == nullptr || mask[i] != 0;
    F* drow = dlogits != nullptr ? dlogits + size_t(i) * ld : nullptr;
    if (!counted) {
      if (losses != nullptr) losses[i] = F(0);
      if (drow != nullptr) std::memset(static_cast<void*>(drow), 0, sizeof(F) * ld);
      continue;
    }
    const F loss = crossentropy_row(drow, logits + size_t(i) * ld, targets[i], dloss, V);
    if (losses != nullptr) losses[i] = loss;
    if (drow != nullptr) std::memset(static_cast<void*>(drow + V), 0, sizeof(F) * (ld - V));
  }
}

template void crossentropy_forward_backward<float>(float*, float*, const float*, const int32_t*,
                                                   const uint8_t*, float, int, int, int);
template void crossentropy_forward_backward<double>(double*, double*, const double*, const int32_t*,
                                                    const uint8_t*, double, int, int, int);

}  // namespace accum::kernels::cpu
