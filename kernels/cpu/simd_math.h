// kernels/cpu/simd_math.h — vectorizable math shared by the CPU ops (internal).
//
// The kernels library builds for x86-64-v2 with -ffp-contract=off. Hot loops are
// compiled again for AVX2 and AVX-512 with ACCUM_CPU_CLONES (GCC target_clones,
// chosen at load time); since contraction is off and no reassociation is allowed,
// every clone computes bit-identical results.
//
// libm's expf/tanhf do not vectorize, so float paths use exp_approx/tanh_approx
// below (Cephes-style, ~1 ulp for exp, ~1e-7 absolute for tanh); double paths use
// std::exp/std::tanh so double runs stay exact references.
//
// Sums use kLanes independent accumulators combined in a fixed tree: that order
// vectorizes without -ffast-math and is the same on every machine.
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>

#define ACCUM_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

namespace accum::kernels::cpu {

// exp(x), x clamped to [-87, 88] (the normal float range), rel. error ~1.5e-7.
inline float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + kRound) - kRound;  // n = round(x / ln 2)
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // r = x - n ln2, |r| <= ln2/2
  const float r2 = r * r;
  float p = 1.9875691500e-4f;  // Cephes expf minimax polynomial for e^r
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 127]
  return p * std::bit_cast<float>(bits);
}
inline double exp_approx(double x) { return std::exp(x); }

// tanh(u) = sign(u) (1 - e) / (1 + e), e = exp(-2|u|); |u| clamped to 9 where tanh
// rounds to 1 in float. Absolute error ~1e-7, which is what GELU's 1 + tanh needs.
inline float tanh_approx(float u) {
  float a = std::fabs(u);
  a = a > 9.0f ? 9.0f : a;
  const float e = exp_approx(-2.0f * a);
  return std::copysign((1.0f - e) / (1.0f + e), u);
}
inline double tanh_approx(double u) { return std::tanh(u); }

inline constexpr int kLanes = 16;

// Combines kLanes partial sums in a fixed pairwise tree.
template <typename A>
inline A combine_lanes(A* acc) {
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int k = 0; k < width; ++k) acc[k] += acc[k + width];
  }
  return acc[0];
}

// sum_i x[i]
template <typename F>
inline F lane_sum(const F* x, int n) {
  F acc[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) acc[k] += x[i + k];
  }
  for (int k = 0; i + k < n; ++k) acc[k] += x[i + k];
  return combine_lanes(acc);
}

// max_i x[i], n >= 1
template <typename F>
inline F lane_max(const F* x, int n) {
  F acc[kLanes];
  for (int k = 0; k < kLanes; ++k) acc[k] = x[0];
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) acc[k] = x[i + k] > acc[k] ? x[i + k] : acc[k];
  }
  for (int k = 0; i + k < n; ++k) acc[k] = x[i + k] > acc[k] ? x[i + k] : acc[k];
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int k = 0; k < width; ++k) acc[k] = acc[k + width] > acc[k] ? acc[k + width] : acc[k];
  }
  return acc[0];
}

// sum_i a[i] * b[i]
template <typename F>
inline F lane_dot(const F* a, const F* b, int n) {
  F acc[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) acc[k] += a[i + k] * b[i + k];
  }
  for (int k = 0; i + k < n; ++k) acc[k] += a[i + k] * b[i + k];
  return combine_lanes(acc);
}

// Whether `work` units are worth an OpenMP fork/join when each thread should get at
// least `min_per_task` of them (tiny inputs run serially).
inline bool worth_parallel(size_t work, size_t min_per_task) { return work >= 2 * min_per_task; }

}  // namespace accum::kernels::cpu
