// tests/kernels/test_util.h — random inputs, finite differences, error norms and padded rows
// shared by the kernel tests (and, for the rows, by tests/gpu).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace accum::kernels::testing {

// n values uniform in [lo, hi), reproducible from `seed`.
template <typename F = double>
std::vector<F> random_values(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<F> values(n);
  for (auto& value : values) value = F(dist(rng));
  return values;
}

inline std::vector<int32_t> random_tokens(size_t n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<int32_t> tokens(n);
  for (auto& token : tokens) token = dist(rng);
  return tokens;
}

template <typename A, typename B>
std::vector<B> convert(const std::vector<A>& values) {
  return std::vector<B>(values.begin(), values.end());
}

// sum_i out[i] * upstream[i]: the scalar loss whose gradient w.r.t. out is `upstream`.
inline double weighted_sum(const std::vector<double>& out, const std::vector<double>& upstream) {
  double total = 0;
  for (size_t i = 0; i < out.size(); ++i) total += out[i] * upstream[i];
  return total;
}

// Central differences (loss(x + h e_i) - loss(x - h e_i)) / 2h for every i; x is
// restored. `loss` recomputes the forward from the current contents of x.
inline std::vector<double> numeric_gradient(std::vector<double>* x,
                                            const std::function<double()>& loss, double h = 1e-5) {
  std::vector<double> gradient(x->size());
  for (size_t i = 0; i < x->size(); ++i) {
    const double saved = (*x)[i];
    (*x)[i] = saved + h;
    const double plus = loss();
    (*x)[i] = saved - h;
    const double minus = loss();
    (*x)[i] = saved;
    gradient[i] = (plus - minus) / (2 * h);
  }
  return gradient;
}

// ||a - b|| / ||b|| (or ||a - b|| when b is zero).
template <typename A, typename B>
double relative_error(const std::vector<A>& a, const std::vector<B>& b) {
  double diff = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = double(a[i]) - double(b[i]);
    diff += d * d;
    ref += double(b[i]) * double(b[i]);
  }
  return ref > 0 ? std::sqrt(diff / ref) : std::sqrt(diff);
}

// rows x columns values in rows `stride` (>= columns) apart, the padding `fill` (the logits'
// padded rows, Backend::row_stride).
inline std::vector<float> padded_rows(const std::vector<float>& packed, int rows, int columns,
                                      int stride, float fill) {
  std::vector<float> out(size_t(rows) * stride, fill);
  for (int r = 0; r < rows; ++r) {
    std::copy_n(packed.begin() + size_t(r) * columns, columns, out.begin() + size_t(r) * stride);
  }
  return out;
}

// The `columns` values of each of `rows` rows `stride` apart, packed.
inline std::vector<float> packed_rows(const std::vector<float>& strided, int rows, int columns,
                                      int stride) {
  std::vector<float> out(size_t(rows) * columns);
  for (int r = 0; r < rows; ++r) {
    std::copy_n(strided.begin() + size_t(r) * stride, columns, out.begin() + size_t(r) * columns);
  }
  return out;
}

// How many padding elements (columns..stride of each row) are not NaN: written over poison.
inline int finite_padding(const std::vector<float>& strided, int rows, int columns, int stride) {
  int written = 0;
  for (int r = 0; r < rows; ++r) {
    for (int c = columns; c < stride; ++c) written += !std::isnan(strided[size_t(r) * stride + c]);
  }
  return written;
}

// What `call` throws as an E, or "(accepted)" when it returns: lets a test check that bad
// input is refused with a message that names it.
template <typename E>
std::string thrown_message(const std::function<void()>& call) {
  try {
    call();
  } catch (const E& e) {
    return e.what();
  }
  return "(accepted)";
}

}  // namespace accum::kernels::testing
