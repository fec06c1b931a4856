// tests/gpu/cuda_training_test.cpp — whole training steps of a tiny GPT-2 (bench/gpu's
// Gpt2Step, written against the op interface) on CUDA vs the CPU oracle:
//   * 10 optimizer steps: every step's loss within 2% of the CPU's;
//   * the same 3 steps run twice on CUDA give bit-identical losses and weights.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "bench/gpu/gpt2_step.h"
#include "tests/gpu/gpu_test_util.h"

namespace accum::kernels::gpu_testing {
namespace {

constexpr int kB = 2, kT = 48;

bench::Gpt2Config tiny_config() {
  bench::Gpt2Config config;
  config.n_layer = 2;
  config.n_head = 2;
  config.d_model = 64;
  config.vocab = 96;
  config.max_seq = 64;
  return config;
}

std::vector<std::vector<int32_t>> tiny_batches() {
  std::vector<std::vector<int32_t>> batches(2, std::vector<int32_t>(kB * kT + 1));
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int32_t> token(0, 95);
  for (auto& batch : batches) {
    for (auto& t : batch) t = token(rng);
  }
  return batches;
}

// Losses of `steps` optimizer steps (K = 2 micro-batches each); weights after them.
std::vector<float> train(Backend& backend, int steps, std::vector<float>* weights = nullptr) {
  bench::Gpt2Step model(backend, tiny_config(), kB, kT, 99);
  const auto batches = tiny_batches();
  const float dloss = 1.f / (2.f * kB * kT);
  std::vector<float> losses;
  for (int step = 1; step <= steps; ++step) {
    model.zero_grad();
    float window_loss = 0;
    for (const auto& batch : batches) {
      model.micro_step(batch, dloss);
      window_loss += model.last_loss() / 2;
    }
    model.optimizer_step(step, 3e-3f);
    losses.push_back(window_loss);
  }
  if (weights) *weights = model.master_weights();
  return losses;
}

TEST(CudaTraining, TenStepsTrackTheCpuLossCurve) {
  ACCUM_REQUIRE_CUDA();
  Backends backends;
  const auto want = train(*backends.cpu, 10);
  const auto got = train(*backends.gpu, 10);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_LE(std::abs(got[i] - want[i]) / want[i], 0.02)
        << "step " << i + 1 << ": CUDA loss " << got[i] << " vs CPU " << want[i];
  }
  EXPECT_LE(want.back(), want.front() * 0.95f) << "the CPU loss did not fall: bad test setup";
}

TEST(CudaTraining, RepeatedRunsAreBitIdentical) {
  ACCUM_REQUIRE_CUDA();
  Backends backends;
  std::vector<float> weights_a, weights_b;
  const auto losses_a = train(*backends.gpu, 3, &weights_a);
  const auto losses_b = train(*backends.gpu, 3, &weights_b);
  ASSERT_EQ(losses_a.size(), losses_b.size());
  EXPECT_EQ(std::memcmp(losses_a.data(), losses_b.data(), losses_a.size() * sizeof(float)), 0);
  ASSERT_EQ(weights_a.size(), weights_b.size());
  EXPECT_EQ(std::memcmp(weights_a.data(), weights_b.data(), weights_a.size() * sizeof(float)), 0)
      << "two identical CUDA training runs produced different weights";
}

}  // namespace
}  // namespace accum::kernels::gpu_testing
