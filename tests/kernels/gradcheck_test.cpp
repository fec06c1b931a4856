// Every CPU op's backward against central finite differences, in double.
//
// For an op out = f(x) and a random upstream gradient u, the analytic gradient of
// loss = sum(out * u) from the op's backward (added into zeroed buffers, or for parameter
// gradients written with GradMode::kWrite over NaN) must match the numeric one to a
// relative L2 error below kTolerance.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/kernels/test_util.h"

namespace accum::kernels::cpu {
namespace {

using testing::numeric_gradient;
using testing::random_tokens;
using testing::random_values;
using testing::relative_error;
using testing::weighted_sum;
using Vec = std::vector<double>;

constexpr double kTolerance = 1e-6;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

TEST(GradCheck, Encoder) {
  const int B = 2, T = 3, C = 5, V = 4;
  std::vector<int32_t> tokens = {1, 3, 1, 0, 1, 3};  // repeats exercise the scatter-add
  Vec wte = random_values(V * C, 1), wpe = random_values(T * C, 2);
  const Vec upstream = random_values(B * T * C, 3);
  Vec out(B * T * C);
  auto loss = [&] {
    encoder_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
    return weighted_sum(out, upstream);
  };
  Vec dwte(V * C, 0.0), dwpe(T * C, 0.0);
  encoder_backward(dwte.data(), dwpe.data(), upstream.data(), tokens.data(), B, T, C);
  EXPECT_LT(relative_error(dwte, numeric_gradient(&wte, loss)), kTolerance);
  EXPECT_LT(relative_error(dwpe, numeric_gradient(&wpe, loss)), kTolerance);
  // Token 2 never occurs: its gradient row is exactly zero.
  for (int c = 0; c < C; ++c) EXPECT_EQ(dwte[2 * C + c], 0.0);
}

TEST(GradCheck, LayerNormInputWeightBias) {
  const int N = 4, C = 19;  // C > one lane group plus a tail
  Vec inp = random_values(N * C, 4, -2, 3), weight = random_values(C, 5, 0.5, 1.5),
      bias = random_values(C, 6);
  const Vec upstream = random_values(N * C, 7);
  Vec out(N * C), mean(N), rstd(N);
  auto loss = [&] {
    layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(), bias.data(),
                      N, C);
    return weighted_sum(out, upstream);
  };
  loss();
  // kWrite: the parameter gradients start as NaN and must all be written.
  Vec dinp(N * C, 0.0), dweight(C, kNaN), dbias(C, kNaN);
  layernorm_backward<double>(dinp.data(), dweight.data(), dbias.data(), nullptr, upstream.data(),
                             inp.data(), weight.data(), mean.data(), rstd.data(), N, C,
                             GradMode::kWrite);
  EXPECT_LT(relative_error(dinp, numeric_gradient(&inp, loss)), kTolerance);
  EXPECT_LT(relative_error(dweight, numeric_gradient(&weight, loss)), kTolerance);
  EXPECT_LT(relative_error(dbias, numeric_gradient(&bias, loss)), kTolerance);
}

struct MatmulCase {
  WeightLayout layout;
  bool with_bias;
};

class MatmulGradCheck : public ::testing::TestWithParam<MatmulCase> {};

TEST_P(MatmulGradCheck, InputWeightBias) {
  const auto [layout, with_bias] = GetParam();
  const int N = 5, C = 6, OC = 7;
  Vec inp = random_values(N * C, 8), weight = random_values(C * OC, 9),
      bias = random_values(OC, 10);
  const Vec upstream = random_values(N * OC, 11);
  Vec out(N * OC);
  auto loss = [&] {
    matmul_forward(out.data(), inp.data(), weight.data(), with_bias ? bias.data() : nullptr, N, C,
                   OC, layout);
    return weighted_sum(out, upstream);
  };
  // The forward against a direct triple loop, so a layout mix-up cannot pass.
  loss();
  for (int n = 0; n < N; ++n) {
    for (int o = 0; o < OC; ++o) {
      double expected = with_bias ? bias[o] : 0.0;
      for (int c = 0; c < C; ++c) {
        const double w = layout == WeightLayout::kInOut ? weight[c * OC + o] : weight[o * C + c];
        expected += inp[n * C + c] * w;
      }
      EXPECT_NEAR(out[n * OC + o], expected, 1e-12);
    }
  }
  Vec dinp(N * C, kNaN), dweight(C * OC, kNaN), dbias(OC, kNaN);  // all must be written
  matmul_backward(dinp.data(), dweight.data(), with_bias ? dbias.data() : nullptr, upstream.data(),
                  inp.data(), weight.data(), N, C, OC, layout, GradMode::kWrite);
  EXPECT_LT(relative_error(dinp, numeric_gradient(&inp, loss)), kTolerance);
  EXPECT_LT(relative_error(dweight, numeric_gradient(&weight, loss)), kTolerance);
  if (with_bias) {
    EXPECT_LT(relative_error(dbias, numeric_gradient(&bias, loss)), kTolerance);
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, MatmulGradCheck,
                         ::testing::Values(MatmulCase{WeightLayout::kInOut, true},
                                           MatmulCase{WeightLayout::kInOut, false},
                                           MatmulCase{WeightLayout::kOutIn, true},
                                           MatmulCase{WeightLayout::kOutIn, false}));

class AttentionGradCheck : public ::testing::TestWithParam<int> {};  // row_block

TEST_P(AttentionGradCheck, Qkv) {
  const int row_block = GetParam();
  const int B = 2, T = 7, C = 8, NH = 2;
  Vec qkv = random_values(B * T * 3 * C, 12, -1.5, 1.5);
  const Vec upstream = random_values(B * T * C, 13);
  Vec out(B * T * C), probs(B * NH * T * T);
  auto loss = [&] {
    attention_forward(out.data(), probs.data(), qkv.data(), B, T, C, NH, row_block);
    return weighted_sum(out, upstream);
  };
  loss();
  Vec dqkv(qkv.size(), 0.0);
  attention_backward(dqkv.data(), upstream.data(), qkv.data(), probs.data(), B, T, C, NH,
                     row_block);
  EXPECT_LT(relative_error(dqkv, numeric_gradient(&qkv, loss)), kTolerance);
}

// 64: one block; 3 and 2: several blocks with a ragged last one.
INSTANTIATE_TEST_SUITE_P(RowBlocks, AttentionGradCheck, ::testing::Values(64, 3, 2));

TEST(Attention, FutureTokensDoNotAffectOutputs) {
  const int B = 2, T = 9, C = 12, NH = 3, t0 = 4;
  Vec qkv = random_values(B * T * 3 * C, 14);
  Vec out(B * T * C), probs(B * NH * T * T);
  attention_forward(out.data(), probs.data(), qkv.data(), B, T, C, NH, 4);
  const Vec before = out;
  for (int b = 0; b < B; ++b) {
    for (int t = t0 + 1; t < T; ++t) {
      for (int c = 0; c < 3 * C; ++c) qkv[(b * T + t) * 3 * C + c] += 10.0;
    }
  }
  attention_forward(out.data(), probs.data(), qkv.data(), B, T, C, NH, 4);
  bool later_changed = false;
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      for (int c = 0; c < C; ++c) {
        const size_t i = (b * T + t) * C + c;
        if (t <= t0) {
          EXPECT_EQ(out[i], before[i]) << "b " << b << " t " << t << " c " << c;
        } else if (out[i] != before[i]) {
          later_changed = true;
        }
      }
    }
  }
  EXPECT_TRUE(later_changed);  // the perturbation was real
  // Saved probabilities: rows sum to 1, zero above the diagonal.
  for (int row = 0; row < B * NH * T; ++row) {
    const int t = row % T;
    double sum = 0;
    for (int j = 0; j < T; ++j) {
      if (j > t) {
        EXPECT_EQ(probs[row * T + j], 0.0);
      }
      sum += probs[row * T + j];
    }
    EXPECT_NEAR(sum, 1.0, 1e-12);
  }
}

TEST(GradCheck, Gelu) {
  const size_t n = 57;
  Vec inp = random_values(n, 15, -4, 4);
  const Vec upstream = random_values(n, 16);
  Vec out(n);
  auto loss = [&] {
    gelu_forward(out.data(), inp.data(), n);
    return weighted_sum(out, upstream);
  };
  loss();
  for (size_t i = 0; i < n; ++i) {
    const double x = inp[i];
    const double expected =
        0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    EXPECT_NEAR(out[i], expected, 1e-15);
  }
  Vec dinp(n, 0.0);
  gelu_backward(dinp.data(), inp.data(), upstream.data(), n);
  EXPECT_LT(relative_error(dinp, numeric_gradient(&inp, loss)), kTolerance);
}

TEST(GradCheck, CrossEntropyWithMask) {
  const int N = 6, V = 21;
  Vec logits = random_values(N * V, 17, -3, 3);
  const std::vector<int32_t> targets = {3, 0, 20, 7, -1, 11};  // -1 sits under a zero mask
  const std::vector<uint8_t> mask = {1, 1, 0, 1, 0, 1};
  const double dloss = 0.37;
  Vec losses(N);
  auto loss = [&] {
    crossentropy_forward_backward<double>(losses.data(), nullptr, logits.data(), targets.data(),
                                          mask.data(), dloss, N, V);
    double total = 0;
    for (double l : losses) total += dloss * l;
    return total;
  };
  loss();
  for (int i = 0; i < N; ++i) {
    if (!mask[i]) {
      EXPECT_EQ(losses[i], 0.0);
      continue;
    }
    double z = 0;
    for (int j = 0; j < V; ++j) z += std::exp(logits[i * V + j]);
    EXPECT_NEAR(losses[i], std::log(z) - logits[i * V + targets[i]], 1e-13);
  }
  Vec dlogits(N * V, 99.0);  // written, not added: the 99s must all be gone
  crossentropy_forward_backward(losses.data(), dlogits.data(), logits.data(), targets.data(),
                                mask.data(), dloss, N, V);
  EXPECT_LT(relative_error(dlogits, numeric_gradient(&logits, loss)), kTolerance);
  for (int j = 0; j < V; ++j) {
    EXPECT_EQ(dlogits[2 * V + j], 0.0);
    EXPECT_EQ(dlogits[4 * V + j], 0.0);
  }
}

TEST(CrossEntropy, StableForHugeLogitsAndRejectsBadTargets) {
  const int N = 2, V = 4;
  const Vec logits = {1000, 999, 998, -1000, -5000, -5001, -4999, -5000};
  const std::vector<int32_t> targets = {0, 2};
  Vec losses(N), dlogits(N * V);
  crossentropy_forward_backward(losses.data(), dlogits.data(), logits.data(), targets.data(),
                                nullptr, 1.0, N, V);
  EXPECT_NEAR(losses[0], std::log(1 + std::exp(-1.0) + std::exp(-2.0)), 1e-12);
  const double z1 = std::exp(-1.0) + std::exp(-2.0) + 1 + std::exp(-1.0);
  EXPECT_NEAR(losses[1], std::log(z1), 1e-12);
  for (double d : dlogits) EXPECT_TRUE(std::isfinite(d));

  const std::vector<int32_t> bad_targets = {0, 4};
  EXPECT_THROW(crossentropy_forward_backward(losses.data(), dlogits.data(), logits.data(),
                                             bad_targets.data(), nullptr, 1.0, N, V),
               std::invalid_argument);
}

}  // namespace
}  // namespace accum::kernels::cpu
