// AdamW against a hand-written double reference of the PyTorch formula, and the
// reproducible sum of squares behind the global gradient norm.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/test_util.h"

namespace accum::kernels {
namespace {

using testing::random_values;
using testing::relative_error;

// backend.h's formula, term by term in double:
//   g = grads*grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2
//   p -= lr * (wd * p + (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps))
void reference_adamw(std::vector<double>* p, const std::vector<double>& grads,
                     std::vector<double>* m, std::vector<double>* v, const AdamWParams& hp) {
  const double b1 = hp.beta1, b2 = hp.beta2;
  for (size_t i = 0; i < p->size(); ++i) {
    const double g = grads[i] * double(hp.grad_scale);
    (*m)[i] = b1 * (*m)[i] + (1 - b1) * g;
    (*v)[i] = b2 * (*v)[i] + (1 - b2) * g * g;
    const double m_hat = (*m)[i] / (1 - std::pow(b1, hp.step));
    const double v_hat = (*v)[i] / (1 - std::pow(b2, hp.step));
    (*p)[i] -= double(hp.lr) *
               (double(hp.weight_decay) * (*p)[i] + m_hat / (std::sqrt(v_hat) + double(hp.eps)));
  }
}

TEST(AdamW, MatchesPyTorchFormulaOverSteps) {
  const size_t n = 40000;  // several parallel chunks and a tail
  auto backend = make_cpu_backend();
  std::vector<double> p_ref = random_values(n, 1), m_ref(n, 0.0), v_ref(n, 0.0);
  std::vector<float> p = testing::convert<double, float>(p_ref), m(n, 0.0f), v(n, 0.0f);
  std::vector<double> p_dbl = p_ref, m_dbl(n, 0.0), v_dbl(n, 0.0);
  AdamWParams hp;
  hp.lr = 3e-3f;
  hp.beta1 = 0.9f;
  hp.beta2 = 0.95f;
  hp.eps = 1e-8f;
  hp.weight_decay = 0.1f;
  hp.grad_scale = 0.5f;
  for (int step = 1; step <= 5; ++step) {
    hp.step = step;
    // Gradients of very different sizes so eps and bias correction both matter.
    std::vector<double> grads = random_values(n, 10 + step, -2, 2);
    for (size_t i = 0; i < n; i += 7) grads[i] *= 1e-6;
    const std::vector<float> grads_f = testing::convert<double, float>(grads);
    reference_adamw(&p_ref, testing::convert<float, double>(grads_f), &m_ref, &v_ref, hp);
    backend->adamw_update(p.data(), /*working=*/p.data(), grads_f.data(), m.data(), v.data(), n,
                          hp);
    cpu::adamw_update(p_dbl.data(), testing::convert<float, double>(grads_f).data(), m_dbl.data(),
                      v_dbl.data(), n, hp);
  }
  EXPECT_LT(relative_error(p, p_ref), 1e-6);
  EXPECT_LT(relative_error(m, m_ref), 1e-6);
  EXPECT_LT(relative_error(v, v_ref), 1e-6);
  // The double instantiation differs from the reference only in rounding.
  EXPECT_LT(relative_error(p_dbl, p_ref), 1e-13);
  // The update actually moved the parameters (the test can fail).
  EXPECT_GT(relative_error(p, random_values(n, 1)), 1e-4);
}

// The spec allows any beta in [0, 1). Betas this close to 1 round to 1.0f in fp32, where
// the second moment would stop moving and 1 - beta2^t would be 0: torch.optim keeps them as
// Python floats (double), and so must the update, or the first step makes every weight NaN.
TEST(AdamW, BetasCloseToOneKeepTheirDoublePrecision) {
  const size_t n = 1000;
  std::vector<double> p_ref = random_values(n, 3), m_ref(n, 0.0), v_ref(n, 0.0);
  std::vector<float> p = testing::convert<double, float>(p_ref), m(n, 0.0f), v(n, 0.0f);
  AdamWParams hp;
  hp.lr = 1e-3f;
  hp.beta1 = 0.99999999;
  hp.beta2 = 0.99999999;
  ASSERT_EQ(static_cast<float>(hp.beta2), 1.0f) << "pick a beta that rounds to 1 in fp32";
  hp.weight_decay = 0.1f;
  for (int step = 1; step <= 3; ++step) {
    hp.step = step;
    const std::vector<float> grads = testing::convert<double, float>(random_values(n, 20 + step));
    reference_adamw(&p_ref, testing::convert<float, double>(grads), &m_ref, &v_ref, hp);
    cpu::adamw_update(p.data(), grads.data(), m.data(), v.data(), n, hp);
  }
  for (size_t i = 0; i < n; ++i) ASSERT_TRUE(std::isfinite(p[i])) << "p[" << i << "]";
  EXPECT_LT(relative_error(p, p_ref), 1e-6);
  EXPECT_LT(relative_error(m, m_ref), 1e-6);
  EXPECT_LT(relative_error(v, v_ref), 1e-6);
  EXPECT_GT(relative_error(p, random_values(n, 3)), 1e-4);  // the weights moved
}

TEST(AdamW, WeightDecayAloneShrinksParameters) {
  // Zero gradients: m = v = 0, so p <- p (1 - lr wd) exactly as PyTorch does.
  const size_t n = 100;
  std::vector<float> p(n, 2.0f), grads(n, 0.0f), m(n, 0.0f), v(n, 0.0f);
  AdamWParams hp;
  hp.lr = 0.1f;
  hp.weight_decay = 0.5f;
  cpu::adamw_update(p.data(), grads.data(), m.data(), v.data(), n, hp);
  for (float x : p) EXPECT_FLOAT_EQ(x, 2.0f * (1.0f - 0.1f * 0.5f));
}

TEST(SumSquares, MatchesDoubleReferenceAndIgnoresThreadCount) {
  const size_t n = (1u << 20) + 12345;
  const auto x = random_values<float>(n, 2, -3, 3);
  double reference = 0;
  for (float value : x) reference += double(value) * double(value);

  auto backend = make_cpu_backend();
  const int previous = omp_get_max_threads();
  omp_set_num_threads(2);
  const double two_threads = backend->sum_squares(x.data(), n);
  EXPECT_EQ(backend->sum_squares(x.data(), n), two_threads);  // run to run
  omp_set_num_threads(1);
  const double one_thread = backend->sum_squares(x.data(), n);
  omp_set_num_threads(5);
  const double five_threads = backend->sum_squares(x.data(), n);
  omp_set_num_threads(previous);
  EXPECT_EQ(one_thread, two_threads);
  EXPECT_EQ(five_threads, two_threads);
  EXPECT_NEAR(two_threads, reference, 1e-12 * reference);
  EXPECT_EQ(backend->sum_squares(x.data(), 0), 0.0);
  EXPECT_EQ(backend->sum_squares(x.data(), 3),
            double(x[0]) * x[0] + double(x[1]) * x[1] + double(x[2]) * x[2]);
}

}  // namespace
}  // namespace accum::kernels
