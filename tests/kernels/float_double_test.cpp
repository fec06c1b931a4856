// The float ops (what the back end runs) against the double ops on the same
// inputs, at sizes that use the vector paths, several attention row blocks and
// ragged tails; plus determinism across runs and thread counts.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd_math.h"
#include "tests/kernels/test_util.h"

namespace accum::kernels::cpu {
namespace {

using testing::convert;
using testing::random_tokens;
using testing::random_values;
using testing::relative_error;
using Vec = std::vector<double>;
using VecF = std::vector<float>;

constexpr double kTolerance = 2e-6;

TEST(SimdMath, ExpApproxIsAccurateOverTheFloatRange) {
  double worst = 0;
  for (double x = -87.0; x <= 88.0; x += 0.0137) {
    const double approx = exp_approx(float(x));
    const double exact = std::exp(double(float(x)));
    worst = std::max(worst, std::abs(approx - exact) / exact);
  }
  EXPECT_LT(worst, 3e-7);
  EXPECT_EQ(exp_approx(-1000.0f), exp_approx(-87.0f));  // clamped, no garbage
  EXPECT_EQ(exp_approx(0.0f), 1.0f);
}

TEST(SimdMath, TanhApproxIsAccurate) {
  double worst = 0;
  for (double u = -12.0; u <= 12.0; u += 0.00071) {
    worst = std::max(worst, std::abs(double(tanh_approx(float(u))) - std::tanh(double(float(u)))));
  }
  EXPECT_LT(worst, 3e-7);
}

TEST(FloatVsDouble, EncoderAndResidual) {
  const int B = 3, T = 17, C = 40, V = 50;
  const auto tokens = random_tokens(B * T, V, 1);
  const Vec wte = random_values(V * C, 2), wpe = random_values(T * C, 3),
            dout = random_values(B * T * C, 4);
  Vec out(B * T * C), dwte(V * C, 0.0), dwpe(T * C, 0.0), sum(B * T * C);
  encoder_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
  encoder_backward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C);
  residual_forward(sum.data(), out.data(), dout.data(), sum.size());
  VecF out_f(out.size()), dwte_f(dwte.size(), 0.0f), dwpe_f(dwpe.size(), 0.0f), sum_f(sum.size());
  const VecF wte_f = convert<double, float>(wte), wpe_f = convert<double, float>(wpe),
             dout_f = convert<double, float>(dout);
  encoder_forward(out_f.data(), tokens.data(), wte_f.data(), wpe_f.data(), B, T, C);
  encoder_backward(dwte_f.data(), dwpe_f.data(), dout_f.data(), tokens.data(), B, T, C);
  residual_forward(sum_f.data(), out_f.data(), dout_f.data(), sum_f.size());
  EXPECT_LT(relative_error(out_f, out), kTolerance);
  EXPECT_LT(relative_error(dwte_f, dwte), kTolerance);
  EXPECT_LT(relative_error(dwpe_f, dwpe), kTolerance);
  EXPECT_LT(relative_error(sum_f, sum), kTolerance);
}

TEST(FloatVsDouble, LayerNorm) {
  const int N = 33, C = 100;
  const Vec inp = random_values(N * C, 5, -3, 5), weight = random_values(C, 6),
            bias = random_values(C, 7), dout = random_values(N * C, 8);
  Vec out(N * C), mean(N), rstd(N), dinp(N * C, 0.0), dweight(C, 0.0), dbias(C, 0.0),
      dinp_sum(C, 0.0);
  layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(), bias.data(), N,
                    C);
  layernorm_backward(dinp.data(), dweight.data(), dbias.data(), dinp_sum.data(), dout.data(),
                     inp.data(), weight.data(), mean.data(), rstd.data(), N, C, GradMode::kAdd);
  const VecF inp_f = convert<double, float>(inp), weight_f = convert<double, float>(weight),
             bias_f = convert<double, float>(bias), dout_f = convert<double, float>(dout);
  VecF out_f(N * C), mean_f(N), rstd_f(N), dinp_f(N * C, 0.0f), dweight_f(C, 0.0f),
      dbias_f(C, 0.0f), dinp_sum_f(C, 0.0f);
  layernorm_forward(out_f.data(), mean_f.data(), rstd_f.data(), inp_f.data(), weight_f.data(),
                    bias_f.data(), N, C);
  layernorm_backward(dinp_f.data(), dweight_f.data(), dbias_f.data(), dinp_sum_f.data(),
                     dout_f.data(), inp_f.data(), weight_f.data(), mean_f.data(), rstd_f.data(), N,
                     C, GradMode::kAdd);
  EXPECT_LT(relative_error(out_f, out), kTolerance);
  EXPECT_LT(relative_error(rstd_f, rstd), kTolerance);
  EXPECT_LT(relative_error(dinp_f, dinp), kTolerance);
  EXPECT_LT(relative_error(dweight_f, dweight), kTolerance);
  EXPECT_LT(relative_error(dbias_f, dbias), kTolerance);
  EXPECT_LT(relative_error(dinp_sum_f, dinp_sum), kTolerance);
}

TEST(FloatVsDouble, AttentionAcrossRowBlocks) {
  const int B = 2, T = 70, C = 32, NH = 4;
  const Vec qkv = random_values(B * T * 3 * C, 9, -2, 2), dout = random_values(B * T * C, 10);
  const VecF qkv_f = convert<double, float>(qkv), dout_f = convert<double, float>(dout);
  Vec ref_out(B * T * C), ref_dqkv(qkv.size(), 0.0), probs(B * NH * T * T);
  attention_forward(ref_out.data(), probs.data(), qkv.data(), B, T, C, NH, T);  // one block
  attention_backward(ref_dqkv.data(), dout.data(), qkv.data(), probs.data(), B, T, C, NH, T);
  for (int row_block : {64, 16, 5}) {
    VecF out_f(B * T * C), dqkv_f(qkv.size(), 0.0f), probs_f(probs.size());
    attention_forward(out_f.data(), probs_f.data(), qkv_f.data(), B, T, C, NH, row_block);
    attention_backward(dqkv_f.data(), dout_f.data(), qkv_f.data(), probs_f.data(), B, T, C, NH,
                       row_block);
    EXPECT_LT(relative_error(out_f, ref_out), kTolerance) << "row_block " << row_block;
    EXPECT_LT(relative_error(probs_f, probs), kTolerance) << "row_block " << row_block;
    EXPECT_LT(relative_error(dqkv_f, ref_dqkv), kTolerance) << "row_block " << row_block;
  }
}

TEST(FloatVsDouble, MatmulGeluCrossEntropy) {
  const int N = 33, C = 40, OC = 50, V = 1000;
  const Vec inp = random_values(N * C, 11), weight = random_values(C * OC, 12),
            bias = random_values(OC, 13), dout = random_values(N * OC, 14);
  const VecF inp_f = convert<double, float>(inp), weight_f = convert<double, float>(weight),
             bias_f = convert<double, float>(bias), dout_f = convert<double, float>(dout);
  Vec out(N * OC), dinp(N * C, 0.0), dweight(C * OC, 0.0), dbias(OC, 0.0);
  VecF out_f(N * OC), dinp_f(N * C, 0.0f), dweight_f(C * OC, 0.0f), dbias_f(OC, 0.0f);
  matmul_forward(out.data(), inp.data(), weight.data(), bias.data(), N, C, OC,
                 WeightLayout::kInOut);
  matmul_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(), weight.data(),
                  N, C, OC, WeightLayout::kInOut, GradMode::kAdd);
  matmul_forward(out_f.data(), inp_f.data(), weight_f.data(), bias_f.data(), N, C, OC,
                 WeightLayout::kInOut);
  matmul_backward(dinp_f.data(), dweight_f.data(), dbias_f.data(), dout_f.data(), inp_f.data(),
                  weight_f.data(), N, C, OC, WeightLayout::kInOut, GradMode::kAdd);
  EXPECT_LT(relative_error(out_f, out), kTolerance);
  EXPECT_LT(relative_error(dinp_f, dinp), kTolerance);
  EXPECT_LT(relative_error(dweight_f, dweight), kTolerance);
  EXPECT_LT(relative_error(dbias_f, dbias), kTolerance);

  const Vec x = random_values(20000, 15, -8, 8);
  const VecF x_f = convert<double, float>(x);
  Vec y(x.size()), dx(x.size(), 0.0);
  VecF y_f(x.size()), dx_f(x.size(), 0.0f);
  gelu_forward(y.data(), x.data(), x.size());
  gelu_backward(dx.data(), x.data(), x.data(), x.size());
  gelu_forward(y_f.data(), x_f.data(), x.size());
  gelu_backward(dx_f.data(), x_f.data(), x_f.data(), x.size());
  EXPECT_LT(relative_error(y_f, y), kTolerance);
  EXPECT_LT(relative_error(dx_f, dx), kTolerance);

  const Vec logits = random_values(N * V, 16, -30, 30);  // spread: stability matters
  const VecF logits_f = convert<double, float>(logits);
  const auto targets = random_tokens(N, V, 17);
  std::vector<uint8_t> mask(N, 1);
  mask[3] = 0;
  Vec losses(N), dlogits(N * V);
  VecF losses_f(N), dlogits_f(N * V);
  crossentropy_forward_backward(losses.data(), dlogits.data(), logits.data(), targets.data(),
                                mask.data(), 0.25, N, V);
  crossentropy_forward_backward(losses_f.data(), dlogits_f.data(), logits_f.data(), targets.data(),
                                mask.data(), 0.25f, N, V);
  EXPECT_LT(relative_error(losses_f, losses), kTolerance);
  EXPECT_LT(relative_error(dlogits_f, dlogits), kTolerance);
  // dlogits may alias logits: the in-place result is bit-identical.
  VecF in_place = logits_f;
  VecF losses_in_place(N);
  crossentropy_forward_backward(losses_in_place.data(), in_place.data(), in_place.data(),
                                targets.data(), mask.data(), 0.25f, N, V);
  EXPECT_EQ(in_place, dlogits_f);
  EXPECT_EQ(losses_in_place, losses_f);
}

// Runs the row-reducing ops with `threads` OpenMP threads; returns all outputs.
VecF run_reductions(int threads) {
  const int previous = omp_get_max_threads();
  omp_set_num_threads(threads);
  const int B = 4, T = 64, C = 96, V = 30, NH = 3;
  const int N = B * T;
  const auto tokens = random_tokens(N, V, 18);
  const VecF inp = random_values<float>(N * C, 19), weight = random_values<float>(C, 20),
             bias = random_values<float>(C, 21), dout = random_values<float>(N * C, 22),
             qkv = random_values<float>(N * 3 * C, 23);
  VecF out(N * C), mean(N), rstd(N), grads(N * C + 3 * C + V * C + T * C + N * 3 * C, 0.0f);
  float* dinp = grads.data();
  float* dweight = dinp + N * C;
  float* dbias = dweight + C;
  float* dinp_sum = dbias + C;
  float* dwte = dinp_sum + C;
  float* dwpe = dwte + V * C;
  float* dqkv = dwpe + T * C;
  layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(), bias.data(), N,
                    C);
  layernorm_backward(dinp, dweight, dbias, dinp_sum, dout.data(), inp.data(), weight.data(),
                     mean.data(), rstd.data(), N, C, GradMode::kAdd);
  encoder_backward(dwte, dwpe, dout.data(), tokens.data(), B, T, C);
  VecF att(N * C), probs(size_t(B) * NH * T * T);
  attention_forward(att.data(), probs.data(), qkv.data(), B, T, C, NH);
  attention_backward(dqkv, dout.data(), qkv.data(), probs.data(), B, T, C, NH);
  omp_set_num_threads(previous);
  grads.insert(grads.end(), out.begin(), out.end());
  grads.insert(grads.end(), att.begin(), att.end());
  return grads;
}

TEST(Determinism, BitIdenticalAcrossRunsAndThreadCounts) {
  const VecF first = run_reductions(2);
  EXPECT_EQ(run_reductions(2), first);
  EXPECT_EQ(run_reductions(1), first);
  EXPECT_EQ(run_reductions(3), first);
}

}  // namespace
}  // namespace accum::kernels::cpu
