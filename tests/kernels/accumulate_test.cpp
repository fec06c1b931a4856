// The CPU back end's backward contract (backend.h): every op stores PARAMETER gradients by
// its GradMode (kAdd: +=, kWrite: =) and WRITES activation gradients, except
// layernorm_backward's dinp and the encoder's embedding gradients, which always add.
//
// For each op, with kAdd: on zeroed buffers a call gives g, a second call 2g, a call on
// buffers pre-filled with R gives R + g. With kWrite: parameter gradients NaN-poisoned
// before the call (an element left unwritten stays NaN and fails) hold g after it, while the
// always-added outputs still give R + g. Written outputs: NaN-poisoned before the first call,
// and g after every call whatever they held before.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/test_util.h"

namespace accum::kernels {
namespace {

using testing::random_tokens;
using testing::random_values;
using testing::relative_error;
using Buffers = std::vector<std::vector<float>*>;

constexpr double kTolerance = 1e-6;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> values_plus(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> sum(a.size());
  for (size_t i = 0; i < sum.size(); ++i) sum[i] = a[i] + b[i];
  return sum;
}

// `params` follow the GradMode; `added` always add; `written` are always written.
void expect_backward_contract(const Buffers& params, const Buffers& added, const Buffers& written,
                              const std::function<void(GradMode)>& backward) {
  Buffers summed = params;  // what kAdd adds into
  summed.insert(summed.end(), added.begin(), added.end());
  for (auto* g : summed) std::fill(g->begin(), g->end(), 0.0f);
  for (auto* g : written) std::fill(g->begin(), g->end(), kNaN);
  backward(GradMode::kAdd);
  std::vector<std::vector<float>> once_summed, once_written;
  for (auto* g : summed) once_summed.push_back(*g);
  for (auto* g : written) once_written.push_back(*g);
  auto expect_nonzero_finite = [](const std::vector<float>& g, const char* kind, size_t k) {
    double norm = 0;
    for (float x : g) norm += double(x) * x;
    EXPECT_TRUE(std::isfinite(norm)) << kind << " gradient " << k << " has unwritten elements";
    EXPECT_GT(norm, 0.0) << kind << " gradient " << k << " is all zero";
  };
  for (size_t k = 0; k < summed.size(); ++k) expect_nonzero_finite(once_summed[k], "added", k);
  for (size_t k = 0; k < written.size(); ++k) expect_nonzero_finite(once_written[k], "written", k);
  auto expect_written_is_g = [&](const char* when) {
    for (size_t k = 0; k < written.size(); ++k) {
      EXPECT_LT(relative_error(*written[k], once_written[k]), kTolerance)
          << "written gradient " << k << " " << when << " is not g";
    }
  };

  backward(GradMode::kAdd);
  for (size_t k = 0; k < summed.size(); ++k) {
    EXPECT_LT(relative_error(*summed[k], values_plus(once_summed[k], once_summed[k])), kTolerance)
        << "added gradient " << k << " after two calls is not 2g";
  }
  expect_written_is_g("after two calls");

  std::vector<std::vector<float>> prefilled;
  for (size_t k = 0; k < summed.size(); ++k) {
    *summed[k] = random_values<float>(summed[k]->size(), 100 + k);
    prefilled.push_back(*summed[k]);
  }
  for (size_t k = 0; k < written.size(); ++k) {
    *written[k] = random_values<float>(written[k]->size(), 200 + k);
  }
  backward(GradMode::kAdd);
  for (size_t k = 0; k < summed.size(); ++k) {
    EXPECT_LT(relative_error(*summed[k], values_plus(prefilled[k], once_summed[k])), kTolerance)
        << "added gradient " << k << " on a pre-filled buffer is not R + g";
  }
  expect_written_is_g("on a pre-filled buffer");

  // kWrite: the parameter gradients replace whatever the buffer held (NaN here).
  for (size_t k = 0; k < summed.size(); ++k) {
    if (k < params.size()) {
      std::fill(summed[k]->begin(), summed[k]->end(), kNaN);
    } else {
      *summed[k] = prefilled[k];
    }
  }
  backward(GradMode::kWrite);
  for (size_t k = 0; k < params.size(); ++k) {
    EXPECT_LT(relative_error(*params[k], once_summed[k]), kTolerance)
        << "parameter gradient " << k << " with kWrite is not g";
  }
  for (size_t k = params.size(); k < summed.size(); ++k) {
    EXPECT_LT(relative_error(*summed[k], values_plus(prefilled[k], once_summed[k])), kTolerance)
        << "always-added gradient " << k - params.size() << " with kWrite is not R + g";
  }
  expect_written_is_g("with kWrite");
}

class BackwardContract : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> backend_ = make_cpu_backend();
};

TEST_F(BackwardContract, Encoder) {
  const int B = 2, T = 16, C = 70, V = 11;
  const auto tokens = random_tokens(B * T, V, 1);
  const auto dout = random_values<float>(B * T * C, 2);
  std::vector<float> dwte(V * C), dwpe(T * C);
  expect_backward_contract({}, {&dwte, &dwpe}, {}, [&](GradMode) {
    backend_->encoder_backward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C);
  });
}

TEST_F(BackwardContract, LayerNorm) {
  const int N = 37, C = 80;
  const auto inp = random_values<float>(N * C, 3), weight = random_values<float>(C, 4),
             bias = random_values<float>(C, 5), dout = random_values<float>(N * C, 6);
  std::vector<float> out(N * C), mean(N), rstd(N), dinp(N * C), dweight(C), dbias(C);
  backend_->layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(),
                              bias.data(), N, C);
  expect_backward_contract({&dweight, &dbias}, {&dinp}, {}, [&](GradMode mode) {
    backend_->layernorm_backward(dinp.data(), dweight.data(), dbias.data(), nullptr, dout.data(),
                                 inp.data(), weight.data(), mean.data(), rstd.data(), N, C, mode);
  });
}

// dinp_sum is the column sum of dinp AFTER the add: R + g on a dinp pre-filled with R. Added
// to (kAdd) or written (kWrite) like a parameter gradient, and the same bits as the bias
// gradient matmul_backward sums from that dinp: the model takes the attention and MLP
// projections' bias gradients from it.
TEST_F(BackwardContract, LayerNormDinpSumIsTheBiasGradientOfTheUpdatedDinp) {
  const int N = 37, C = 80, OC_IN = 24;
  const auto inp = random_values<float>(N * C, 3), weight = random_values<float>(C, 4),
             bias = random_values<float>(C, 5), dout = random_values<float>(N * C, 6),
             dinp0 = random_values<float>(N * C, 7), sum0 = random_values<float>(C, 8);
  std::vector<float> out(N * C), mean(N), rstd(N), dweight(C), dbias(C);
  backend_->layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(),
                              bias.data(), N, C);
  for (GradMode mode : {GradMode::kAdd, GradMode::kWrite}) {
    SCOPED_TRACE(mode == GradMode::kAdd ? "kAdd" : "kWrite");
    std::vector<float> dinp = dinp0;
    std::vector<float> dinp_sum = mode == GradMode::kAdd ? sum0 : std::vector<float>(C, kNaN);
    backend_->layernorm_backward(dinp.data(), dweight.data(), dbias.data(), dinp_sum.data(),
                                 dout.data(), inp.data(), weight.data(), mean.data(), rstd.data(),
                                 N, C, mode);
    // The linear layer (OC_IN -> C) whose output gradient is the updated dinp.
    const auto lin_inp = random_values<float>(N * OC_IN, 9),
               lin_weight = random_values<float>(OC_IN * C, 10);
    std::vector<float> lin_dweight(OC_IN * C);
    std::vector<float> want = mode == GradMode::kAdd ? sum0 : std::vector<float>(C, kNaN);
    backend_->matmul_backward(nullptr, lin_dweight.data(), want.data(), dinp.data(), lin_inp.data(),
                              lin_weight.data(), N, OC_IN, C, WeightLayout::kInOut, mode);
    EXPECT_EQ(dinp_sum, want);
    for (int c = 0; c < C; ++c) {
      double sum = mode == GradMode::kAdd ? sum0[c] : 0.0;
      for (int row = 0; row < N; ++row) sum += dinp[row * C + c];
      EXPECT_NEAR(dinp_sum[c], sum, 1e-5 * (1 + std::fabs(sum))) << "column " << c;
    }
  }
}

TEST_F(BackwardContract, MatmulBothLayouts) {
  const int N = 40, C = 48, OC = 72;
  const auto inp = random_values<float>(N * C, 7), weight = random_values<float>(C * OC, 8),
             dout = random_values<float>(N * OC, 9);
  for (WeightLayout layout : {WeightLayout::kInOut, WeightLayout::kOutIn}) {
    std::vector<float> dinp(N * C), dweight(C * OC), dbias(OC);
    expect_backward_contract({&dweight, &dbias}, {}, {&dinp}, [&](GradMode mode) {
      backend_->matmul_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(),
                                weight.data(), N, C, OC, layout, mode);
    });
  }
}

TEST_F(BackwardContract, Attention) {
  const int B = 2, T = 80, C = 32, NH = 4;  // T > one 64-row block
  const auto qkv = random_values<float>(B * T * 3 * C, 10),
             dout = random_values<float>(B * T * C, 11);
  std::vector<float> out(B * T * C), dqkv(qkv.size());
  std::vector<float> saved(backend_->attention_saved_bytes(B, T, NH) / sizeof(float));
  backend_->attention_forward(out.data(), saved.data(), qkv.data(), B, T, C, NH);
  expect_backward_contract({}, {}, {&dqkv}, [&](GradMode) {
    backend_->attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), saved.data(), B,
                                 T, C, NH);
  });
}

TEST_F(BackwardContract, Gelu) {
  const size_t n = 20000;
  const auto inp = random_values<float>(n, 12, -5, 5), dout = random_values<float>(n, 13);
  std::vector<float> dinp(n);
  expect_backward_contract({}, {}, {&dinp}, [&](GradMode) {
    backend_->gelu_backward(dinp.data(), inp.data(), dout.data(), n);
  });
}

}  // namespace
}  // namespace accum::kernels
