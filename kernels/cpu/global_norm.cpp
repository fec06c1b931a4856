// global_norm: the sum of squares behind the global gradient L2 norm.
//
//   sum_squares(x) = sum_i x_i^2, in double.
//
// Reproducible regardless of the thread count: x is cut into fixed blocks of
// kBlock values; each block is summed in double with kLanes accumulators in a
// fixed order (any thread may do it), and the block sums are added in block order
// by one thread. The caller takes sqrt after summing over all tensors (and ranks).
#include <algorithm>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd_math.h"

namespace accum::kernels::cpu {
namespace {

constexpr size_t kBlock = 1 << 14;

template <typename F>
ACCUM_CPU_CLONES double block_sum_squares(const F* x, size_t n) {
  double acc[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const double value = double(x[i + k]);
      acc[k] += value * value;
    }
  }
  for (int k = 0; i + k < n; ++k) {
    const double value = double(x[i + k]);
    acc[k] += value * value;
  }
  return combine_lanes(acc);
}

}  // namespace

template <typename F>
double sum_squares(const F* x, size_t n) {
  const ptrdiff_t blocks = static_cast<ptrdiff_t>((n + kBlock - 1) / kBlock);
  std::vector<double> block_sums(static_cast<size_t>(blocks));
#pragma omp parallel for schedule(static) if (blocks >= 2)
  for (ptrdiff_t block = 0; block < blocks; ++block) {
    const size_t begin = size_t(block) * kBlock;
    block_sums[size_t(block)] = block_sum_squares(x + begin, std::min(kBlock, n - begin));
  }
  double total = 0;
  for (double block_sum : block_sums) total += block_sum;
  return total;
}

template double sum_squares<float>(const float*, size_t);
template double sum_squares<double>(const double*, size_t);

}  // namespace accum::kernels::cpu
