// The CPU back end's fused ops equal, bit for bit, the compositions backend.h defines them
// as (the CUDA fusions are then checked against these in tests/gpu); parameter gradients
// of matmul_gelu_backward add, while its dpre is written over whatever the buffer held.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/test_util.h"

namespace accum::kernels {
namespace {

using testing::random_values;

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class FusedOps : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> backend_ = make_cpu_backend();
};

TEST_F(FusedOps, ResidualLayerNormIsResidualThenLayerNorm) {
  const int N = 29, C = 72;
  const auto a = random_values<float>(N * C, 1, -2, 2), b = random_values<float>(N * C, 2),
             weight = random_values<float>(C, 3, 0.5, 1.5), bias = random_values<float>(C, 4);
  std::vector<float> residual(N * C, -7.f), out(N * C, -7.f), mean(N), rstd(N);
  backend_->residual_layernorm_forward(residual.data(), out.data(), mean.data(), rstd.data(),
                                       a.data(), b.data(), weight.data(), bias.data(), N, C);
  std::vector<float> residual2(N * C), out2(N * C), mean2(N), rstd2(N);
  backend_->residual_forward(residual2.data(), a.data(), b.data(), residual2.size());
  backend_->layernorm_forward(out2.data(), mean2.data(), rstd2.data(), residual2.data(),
                              weight.data(), bias.data(), N, C);
  EXPECT_TRUE(same_bits(residual, residual2));
  EXPECT_TRUE(same_bits(out, out2));
  EXPECT_TRUE(same_bits(mean, mean2));
  EXPECT_TRUE(same_bits(rstd, rstd2));
}

TEST_F(FusedOps, MatmulGeluForwardIsMatmulThenGelu) {
  const int N = 23, C = 40, OC = 56;
  const auto inp = random_values<float>(N * C, 5), weight = random_values<float>(C * OC, 6),
             bias = random_values<float>(OC, 7);
  std::vector<float> out(N * OC, -7.f), pre(N * OC, -7.f);
  backend_->matmul_gelu_forward(out.data(), pre.data(), inp.data(), weight.data(), bias.data(), N,
                                C, OC, WeightLayout::kInOut);
  std::vector<float> pre2(N * OC), out2(N * OC);
  backend_->matmul_forward(pre2.data(), inp.data(), weight.data(), bias.data(), N, C, OC,
                           WeightLayout::kInOut);
  backend_->gelu_forward(out2.data(), pre2.data(), out2.size());
  EXPECT_TRUE(same_bits(pre, pre2));
  EXPECT_TRUE(same_bits(out, out2));
}

// Backward of y = gelu(pre) @ W + bias: the composition is matmul_backward, then
// gelu_backward (both write their dinp).
TEST_F(FusedOps, MatmulGeluBackwardWritesDpreAndAddsParameterGradients) {
  const int N = 23, C = 56, OC = 40;  // C is the input width (4C in the model)
  const auto pre = random_values<float>(N * C, 8, -3, 3), weight = random_values<float>(C * OC, 9),
             dout = random_values<float>(N * OC, 10);
  std::vector<float> inp(N * C);
  backend_->gelu_forward(inp.data(), pre.data(), inp.size());

  std::vector<float> dgelu(N * C), want_dpre(N * C), want_dweight(C * OC), want_dbias(OC);
  backend_->matmul_backward(dgelu.data(), want_dweight.data(), want_dbias.data(), dout.data(),
                            inp.data(), weight.data(), N, C, OC, WeightLayout::kInOut,
                            GradMode::kAdd);
  backend_->gelu_backward(want_dpre.data(), pre.data(), dgelu.data(), want_dpre.size());

  // dpre starts dirty (it must be overwritten); the parameter gradients start at R.
  std::vector<float> dpre = random_values<float>(N * C, 11, 5, 9);
  const auto r_weight = random_values<float>(C * OC, 12), r_bias = random_values<float>(OC, 13);
  std::vector<float> dweight = r_weight, dbias = r_bias;
  backend_->matmul_gelu_backward(dpre.data(), dweight.data(), dbias.data(), dout.data(), inp.data(),
                                 pre.data(), weight.data(), N, C, OC, WeightLayout::kInOut,
                                 GradMode::kAdd);
  EXPECT_TRUE(same_bits(dpre, want_dpre));
  // The GEMM adds with beta = 1 (one rounding), so compare to R + g within float rounding.
  const auto expect_added = [](const std::vector<float>& got, const std::vector<float>& r,
                               const std::vector<float>& g, const char* name) {
    for (size_t i = 0; i < got.size(); ++i) {
      const float want = r[i] + g[i];
      ASSERT_NEAR(got[i], want, 1e-5f * (std::fabs(r[i]) + std::fabs(g[i])) + 1e-7f)
          << name << " " << i << " did not add";
    }
  };
  expect_added(dweight, r_weight, want_dweight, "dweight");
  expect_added(dbias, r_bias, want_dbias, "dbias");
}

}  // namespace
}  // namespace accum::kernels
