// Every backward of the CPU back end ADDS into every gradient output (backend.h).
//
// For each op: backward on zeroed buffers gives g; a second call gives 2g; a call
// on buffers pre-filled with R gives R + g. Activation gradients included.
#include <gtest/gtest.h>

#include <functional>
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

void expect_backward_adds(const Buffers& grads, const std::function<void()>& backward) {
  for (auto* g : grads) std::fill(g->begin(), g->end(), 0.0f);
  backward();
  std::vector<std::vector<float>> once;
  for (auto* g : grads) {
    once.push_back(*g);
    double norm = 0;
    for (float x : *g) norm += double(x) * x;
    EXPECT_GT(norm, 0.0) << "gradient " << once.size() - 1 << " is all zero";
  }
  backward();
  for (size_t k = 0; k < grads.size(); ++k) {
    std::vector<float> twice(once[k].size());
    for (size_t i = 0; i < twice.size(); ++i) twice[i] = 2 * once[k][i];
    EXPECT_LT(relative_error(*grads[k], twice), kTolerance) << "gradient " << k;
  }
  for (size_t k = 0; k < grads.size(); ++k) {
    *grads[k] = random_values<float>(grads[k]->size(), 100 + k);
  }
  std::vector<std::vector<float>> prefilled;
  for (auto* g : grads) prefilled.push_back(*g);
  backward();
  for (size_t k = 0; k < grads.size(); ++k) {
    std::vector<float> expected(once[k].size());
    for (size_t i = 0; i < expected.size(); ++i) expected[i] = prefilled[k][i] + once[k][i];
    EXPECT_LT(relative_error(*grads[k], expected), kTolerance) << "gradient " << k;
  }
}

class BackwardAdds : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> backend_ = make_cpu_backend();
};

TEST_F(BackwardAdds, Encoder) {
  const int B = 2, T = 16, C = 70, V = 11;
  const auto tokens = random_tokens(B * T, V, 1);
  const auto dout = random_values<float>(B * T * C, 2);
  std::vector<float> dwte(V * C), dwpe(T * C);
  expect_backward_adds({&dwte, &dwpe}, [&] {
    backend_->encoder_backward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C);
  });
}

TEST_F(BackwardAdds, LayerNorm) {
  const int N = 37, C = 80;
  const auto inp = random_values<float>(N * C, 3), weight = random_values<float>(C, 4),
             bias = random_values<float>(C, 5), dout = random_values<float>(N * C, 6);
  std::vector<float> out(N * C), mean(N), rstd(N), dinp(N * C), dweight(C), dbias(C);
  backend_->layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(),
                              bias.data(), N, C);
  expect_backward_adds({&dinp, &dweight, &dbias}, [&] {
    backend_->layernorm_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(),
                                 weight.data(), mean.data(), rstd.data(), N, C);
  });
}

TEST_F(BackwardAdds, MatmulBothLayouts) {
  const int N = 40, C = 48, OC = 72;
  const auto inp = random_values<float>(N * C, 7), weight = random_values<float>(C * OC, 8),
             dout = random_values<float>(N * OC, 9);
  for (WeightLayout layout : {WeightLayout::kInOut, WeightLayout::kOutIn}) {
    std::vector<float> dinp(N * C), dweight(C * OC), dbias(OC);
    expect_backward_adds({&dinp, &dweight, &dbias}, [&] {
      backend_->matmul_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(),
                                weight.data(), N, C, OC, layout);
    });
  }
}

TEST_F(BackwardAdds, Attention) {
  const int B = 2, T = 80, C = 32, NH = 4;  // T > one 64-row block
  const auto qkv = random_values<float>(B * T * 3 * C, 10),
             dout = random_values<float>(B * T * C, 11);
  std::vector<float> out(B * T * C), dqkv(qkv.size());
  std::vector<float> saved(backend_->attention_saved_bytes(B, T, NH) / sizeof(float));
  backend_->attention_forward(out.data(), saved.data(), qkv.data(), B, T, C, NH);
  expect_backward_adds({&dqkv}, [&] {
    backend_->attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), saved.data(), B,
                                 T, C, NH);
  });
}

TEST_F(BackwardAdds, Gelu) {
  const size_t n = 20000;
  const auto inp = random_values<float>(n, 12, -5, 5), dout = random_values<float>(n, 13);
  std::vector<float> dinp(n);
  expect_backward_adds({&dinp},
                       [&] { backend_->gelu_backward(dinp.data(), inp.data(), dout.data(), n); });
}

}  // namespace
}  // namespace accum::kernels
