// Whole-model tests on the CPU back end: the GPT-2 gradient against finite
// differences, and the two accumulation contracts — K micro-batches equal one big
// batch, and token-weighted normalization stays exact under masks.
#include <gtest/gtest.h>
#include <malloc.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>

#include "daemon/spec/spec.h"
#include "daemon/worker/model/gpt2.h"
#include "daemon/worker/model/gpt2_hf.h"
#include "kernels/backend.h"

namespace accum::model {
namespace {

spec::ModelConfig tiny_config() { return spec::ModelConfig{2, 2, 16, 32, 8}; }

std::vector<float> download(kernels::Backend* backend, const float* ptr, size_t n) {
  std::vector<float> host(n);
  backend->download(host.data(), ptr, n * sizeof(float));
  return host;
}

double rel_l2(const std::vector<double>& a, const std::vector<double>& b) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  return std::sqrt(diff / norm);
}

struct Batch {
  std::vector<int32_t> inputs, targets;
  std::vector<uint8_t> mask;
  int64_t counted() const { return std::accumulate(mask.begin(), mask.end(), int64_t{0}); }
};

Batch random_batch(int rows, int T, int V, uint32_t seed) {
  std::mt19937 rng(seed);
  Batch batch;
  for (int i = 0; i < rows * T; ++i) {
    batch.inputs.push_back(static_cast<int32_t>(rng() % V));
    batch.targets.push_back(static_cast<int32_t>(rng() % V));
    batch.mask.push_back(1);
  }
  return batch;
}

// Rows [row, row+rows) of a (R, T) batch.
Batch slice(const Batch& batch, int row, int rows, int T) {
  Batch out;
  const size_t begin = static_cast<size_t>(row) * T, end = begin + static_cast<size_t>(rows) * T;
  out.inputs.assign(batch.inputs.begin() + begin, batch.inputs.begin() + end);
  out.targets.assign(batch.targets.begin() + begin, batch.targets.begin() + end);
  out.mask.assign(batch.mask.begin() + begin, batch.mask.begin() + end);
  return out;
}

TEST(Gpt2Test, ParameterTableMatchesHuggingFaceNamesAndCount) {
  const spec::ModelConfig config{12, 12, 768, 50257, 1024};
  const auto table = gpt2_parameter_table(config);
  EXPECT_EQ(table.front().name, "transformer.wte.weight");
  EXPECT_EQ(table[4].name, "transformer.h.0.attn.c_attn.weight");
  EXPECT_EQ(table[4].shape, (std::vector<int64_t>{768, 2304}));
  EXPECT_EQ(table.back().name, "transformer.ln_f.bias");
  const size_t total = table.back().offset + table.back().numel;
  EXPECT_EQ(total, 124439808u);  // GPT-2 small with the tied head, as Hugging Face counts it
  EXPECT_EQ(static_cast<int64_t>(total), spec::parameter_count(config));
}

// Each parameter comes from exactly one tensor of a Hugging Face file: the model's own names
// place, lm_head.weight stands for a missing wte, and a parameter named twice (with and
// without "transformer.") is refused naming both, not loaded from whichever came last.
TEST(Gpt2HfTest, EachParameterComesFromOneTensorOfTheFile) {
  auto backend = kernels::make_backend(kernels::DeviceKind::kCpu);
  Gpt2 model(backend.get(), tiny_config(), 2, 8);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const ParamTensor& t : model.tensors()) shapes[t.name] = t.shape;
  auto placed = place_hf_tensors(model, shapes, "f");
  ASSERT_TRUE(placed.ok()) << placed.status();
  EXPECT_EQ(placed->size(), model.tensors().size());

  auto head_only = shapes;
  head_only["lm_head.weight"] = head_only.at("transformer.wte.weight");
  head_only.erase("transformer.wte.weight");
  placed = place_hf_tensors(model, head_only, "f");
  ASSERT_TRUE(placed.ok()) << placed.status();
  EXPECT_EQ(model.tensors()[placed->at("lm_head.weight")].name, "transformer.wte.weight");

  auto twice = shapes;
  twice["wte.weight"] = twice.at("transformer.wte.weight");
  placed = place_hf_tensors(model, twice, "f");
  ASSERT_FALSE(placed.ok());
  EXPECT_NE(std::string(placed.status().message())
                .find("tensors transformer.wte.weight and wte.weight both hold "
                      "transformer.wte.weight; expected one"),
            std::string::npos)
      << placed.status();
}

TEST(Gpt2Test, ActivationEstimateMatchesWhatTheModelAllocates) {
  auto backend = kernels::make_backend(kernels::DeviceKind::kCpu);
  for (int B : {1, 3}) {
    Gpt2 model(backend.get(), tiny_config(), B, 8);
    EXPECT_EQ(model.activation_bytes(), gpt2_activation_bytes(*backend, tiny_config(), B, 8));
  }
}

// The plan's arithmetic is what the model really allocates: measured with glibc's
// allocator statistics around the constructor (the CPU back end allocates with
// aligned_alloc), every buffer kept on the heap. The uploaded batch alone (9 bytes per token,
// 36 KB here) is larger than the slack allowed for allocator headers and host-side tables.
TEST(Gpt2Test, MemoryPlanCoversEveryBufferTheModelAllocates) {
  ASSERT_EQ(mallopt(M_MMAP_THRESHOLD, 32 << 20), 1);  // no buffer below is mmapped on its own
  auto backend = kernels::make_backend(kernels::DeviceKind::kCpu);
  const auto config = tiny_config();
  const int B = 512, T = 8;
  const auto in_use = [] {
    const struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
  };
  const size_t before = in_use();
  Gpt2 model(backend.get(), config, B, T);
  const size_t allocated = in_use() - before;
  const size_t n = static_cast<size_t>(spec::parameter_count(config));
  const size_t planned = 2 * n * sizeof(float) + gpt2_activation_bytes(*backend, config, B, T);
  EXPECT_GE(allocated, planned);
  EXPECT_LE(allocated, planned + 16 * 1024) << "the model allocates more than its memory plan";
}

// The losses stay on the device between forwards: take_loss_sum() returns the sum over every
// forward since the last call, then starts again from zero.
TEST(Gpt2Test, LossSumCoversEveryForwardSinceTheLastTake) {
  auto backend = kernels::make_backend(kernels::DeviceKind::kCpu);
  const auto config = tiny_config();
  const int B = 2, T = 8;
  Gpt2 model(backend.get(), config, B, T);
  model.init_random(4);
  const Batch a = random_batch(B, T, config.vocab_size, 11);
  const Batch b = random_batch(B, T, config.vocab_size, 12);
  EXPECT_EQ(model.take_loss_sum(), 0.0);
  model.forward(a.inputs.data(), a.targets.data(), a.mask.data(), false);
  const double loss_a = model.take_loss_sum();
  model.forward(b.inputs.data(), b.targets.data(), b.mask.data(), true);
  const double loss_b = model.take_loss_sum();
  // Near log(V) per target at initialization, and the two batches differ.
  EXPECT_NEAR(loss_a / (B * T), std::log(config.vocab_size), 0.5);
  EXPECT_NE(loss_a, loss_b);
  model.forward(a.inputs.data(), a.targets.data(), a.mask.data(), true);
  model.forward(b.inputs.data(), b.targets.data(), b.mask.data(), false);
  EXPECT_EQ(model.take_loss_sum(), loss_a + loss_b);
  EXPECT_EQ(model.take_loss_sum(), 0.0);
}

TEST(Gpt2Test, WholeModelGradientMatchesFiniteDifferences) {
  auto backend = kernels::make_backend(kernels::DeviceKind::kCpu);
  const auto config = tiny_config();
  const int B = 2, T = 8;
  Gpt2 model(backend.get(), config, B, T);
  model.init_random(3);
  // Larger weights than N(0, 0.02) so every path carries a measurable gradient.
  std::vector<float> params = model.download_params();
  std::mt19937 rng(11);
  std::normal_distribution<float> noise(0.0f, 0.3f);
  for (auto& p : params) p += noise(rng);
  model.upload_params(params);
  Batch batch = random_batch(B, T, config.vocab_size, 5);
  batch.mask[3] = 0;  // a masked target must not contribute

  model.forward(batch.inputs.data(), batch.targets.data(), batch.mask.data(), true);
  model.backward(kernels::GradMode::kWrite);
  const std::vector<float> grads = download(backend.get(), model.grads(), model.num_params());
  model.take_loss_sum();  // start the finite differences from a zero total

  auto loss_at = [&](const std::vector<float>& p) {
    model.upload_params(p);
    model.forward(batch.inputs.data(), batch.targets.data(), batch.mask.data(), false);
    return model.take_loss_sum();
  };
  // Every tensor, a few elements each: central differences in fp32 with h = 1e-2.
  std::vector<double> analytic, numeric;
  for (const ParamTensor& tensor : model.tensors()) {
    for (size_t k = 0; k < 3; ++k) {
      const size_t i = tensor.offset + (k * 7919) % tensor.numel;
      std::vector<float> plus = params, minus = params;
      const float h = 1e-2f;
      plus[i] += h;
      minus[i] -= h;
      numeric.push_back((loss_at(plus) - loss_at(minus)) / (2.0 * h));
      analytic.push_back(grads[i]);
    }
  }
  EXPECT_LT(rel_l2(analytic, numeric), 2e-3);
  for (size_t j = 0; j < analytic.size(); ++j) {
    EXPECT_NEAR(analytic[j], numeric[j], 2e-3 + 2e-2 * std::fabs(numeric[j])) << "sample " << j;
  }
}

// A window's first backward (kWrite) stores every gradient, whatever the buffer held: the
// same values as a backward that adds into a zeroed buffer. T = 4 < max_seq_len = 8, so
// wpe's rows 4..7 get no gradient from the encoder and must come out zero, not stale.
TEST(Gpt2Test, FirstBackwardWritesEveryGradient) {
  auto backend = kernels::make_backend(kernels::DeviceKind::kCpu);
  const int B = 2, T = 4;
  Gpt2 model(backend.get(), tiny_config(), B, T);
  model.init_random(3);
  const Batch batch = random_batch(B, T, tiny_config().vocab_size, 6);
  auto gradients_after = [&](kernels::GradMode mode) {
    model.forward(batch.inputs.data(), batch.targets.data(), batch.mask.data(), true);
    model.backward(mode);
    model.take_loss_sum();
    return download(backend.get(), model.grads(), model.num_params());
  };
  model.zero_grads();
  const std::vector<float> added = gradients_after(kernels::GradMode::kAdd);
  const std::vector<float> stale(model.num_params(), std::numeric_limits<float>::quiet_NaN());
  backend->upload(model.grads(), stale.data(), stale.size() * sizeof(float));
  const std::vector<float> written = gradients_after(kernels::GradMode::kWrite);
  ASSERT_EQ(written.size(), added.size());
  for (const auto& tensor : model.tensors()) {
    for (size_t i = tensor.offset; i < tensor.offset + tensor.numel; ++i) {
      ASSERT_EQ(written[i], added[i]) << tensor.name << " element " << i - tensor.offset;
    }
  }
  // A second backward adds: 2x the first, up to rounding (ops add row by row into the sum,
  // so a small gradient made of large terms cancelling carries their rounding).
  const std::vector<float> twice = gradients_after(kernels::GradMode::kAdd);
  float scale = 0;
  for (float g : added) scale = std::max(scale, std::fabs(g));
  for (size_t i = 0; i < twice.size(); ++i) {
    ASSERT_NEAR(twice[i], 2 * added[i], 1e-6 * scale) << i;
  }
}

// Gradient of sum(loss over counted targets) / counted for a batch run as `micro`
// micro-batches of `rows_per_micro` rows each, accumulated in the model's buffer.
std::vector<double> accumulated_gradient(kernels::Backend* backend, const Batch& batch, int micro,
                                         int rows_per_micro, int T, bool per_micro_average) {
  Gpt2 model(backend, tiny_config(), rows_per_micro, T);
  model.init_random(9);
  std::vector<double> result(model.num_params(), 0.0);
  int64_t counted = 0;
  for (int i = 0; i < micro; ++i) {
    Batch part = slice(batch, i * rows_per_micro, rows_per_micro, T);
    // As the trainer: a window's first backward writes the gradients, the others add.
    const bool fresh = i == 0 || per_micro_average;
    model.forward(part.inputs.data(), part.targets.data(), part.mask.data(), true);
    model.backward(fresh ? kernels::GradMode::kWrite : kernels::GradMode::kAdd);
    counted += part.counted();
    if (per_micro_average) {  // the common `loss / grad_accum_steps` recipe
      auto g = download(backend, model.grads(), model.num_params());
      for (size_t j = 0; j < g.size(); ++j) result[j] += g[j] / part.counted() / micro;
    }
  }
  if (!per_micro_average) {
    auto g = download(backend, model.grads(), model.num_params());
    for (size_t j = 0; j < g.size(); ++j) result[j] = g[j] / static_cast<double>(counted);
  }
  return result;
}

TEST(AccumulationTest, EightMicroBatchesOfOneEqualOneBatchOfEight) {
  auto backend = kernels::make_backend(kernels::DeviceKind::kCpu);
  const int T = 8;
  const Batch batch = random_batch(8, T, tiny_config().vocab_size, 21);
  const auto accumulated = accumulated_gradient(backend.get(), batch, 8, 1, T, false);
  const auto big = accumulated_gradient(backend.get(), batch, 1, 8, T, false);
  EXPECT_LE(rel_l2(accumulated, big), 1e-6);
}

TEST(AccumulationTest, TokenWeightedNormalizationIsExactUnderMasks) {
  auto backend = kernels::make_backend(kernels::DeviceKind::kCpu);
  const int T = 8;
  Batch batch = random_batch(4, T, tiny_config().vocab_size, 33);
  // Micro-batches count 8, 2, 5 and 1 targets: prompts, padding, document ends.
  const int keep[4] = {8, 2, 5, 1};
  for (int row = 0; row < 4; ++row) {
    for (int t = 0; t < T; ++t) batch.mask[row * T + t] = t < keep[row] ? 1 : 0;
  }
  const auto accumulated = accumulated_gradient(backend.get(), batch, 4, 1, T, false);
  const auto big = accumulated_gradient(backend.get(), batch, 1, 4, T, false);
  EXPECT_LE(rel_l2(accumulated, big), 1e-6);
  // Averaging each micro-batch and then over micro-batches weights the single counted
  // target of the last micro-batch 8x more than those of the first: not the big batch.
  const auto per_micro = accumulated_gradient(backend.get(), batch, 4, 1, T, true);
  EXPECT_GT(rel_l2(per_micro, big), 0.05);
}

}  // namespace
}  // namespace accum::model
