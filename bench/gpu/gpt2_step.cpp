// bench/gpu/gpt2_step.cpp — forward, backward and AdamW of the benchmark GPT-2 (see .h).
//
// Backward order mirrors the forward in reverse; dresid_ carries d(residual stream):
//   resid3 = resid2 + fcproj  ->  d(fcproj) = dresid, d(resid2) = dresid (same buffer)
//   resid2 = x + attproj      ->  d(attproj) = dresid, dx = dresid + LN1 path (same buffer)
#include "bench/gpu/gpt2_step.h"

#include <cmath>
#include <random>
#include <stdexcept>

namespace accum::bench {
namespace {

using kernels::WeightLayout;

enum LayerTensor {
  kLn1W,
  kLn1B,
  kQkvW,
  kQkvB,
  kAttProjW,
  kAttProjB,
  kLn2W,
  kLn2B,
  kFcW,
  kFcB,
  kFcProjW,
  kFcProjB,
  kPerLayer
};

size_t round8(size_t n) { return (n + 7) / 8 * 8; }

}  // namespace

struct Gpt2Step::Layer {
  void *ln1, *qkv, *atty, *att_saved, *attproj, *resid2, *ln2, *fch, *fch_gelu, *fcproj, *resid3;
  float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd;
};

void* Gpt2Step::alloc(size_t bytes) {
  void* ptr = be_.alloc(bytes);
  allocations_.push_back(ptr);
  allocated_bytes_ += bytes;
  return ptr;
}

Gpt2Step::Gpt2Step(kernels::Backend& backend, const Gpt2Config& config, int B, int T, uint64_t seed)
    : be_(backend), cfg_(config), B_(B), T_(T) {
  if (T > cfg_.max_seq) throw std::invalid_argument("seq_len above max_seq");
  const size_t C = cfg_.d_model, V = cfg_.vocab, L = cfg_.n_layer;
  std::vector<size_t> sizes = {V * C, size_t(cfg_.max_seq) * C};
  for (size_t l = 0; l < L; ++l) {
    for (size_t s : {C, C, C * 3 * C, 3 * C, C * C, C, C, C, C * 4 * C, 4 * C, 4 * C * C, C}) {
      sizes.push_back(s);
    }
  }
  sizes.push_back(C);
  sizes.push_back(C);
  size_t total = 0;
  for (size_t s : sizes) {
    param_offsets_.push_back(total);
    num_params_ += s;
    total += round8(s);
  }
  // Init as GPT-2: N(0, 0.02), residual projections / sqrt(2L), LN weight 1, biases 0.
  std::vector<float> host(total, 0.f);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 0.02f);
  auto fill = [&](size_t tensor, float scale) {
    for (size_t i = 0; i < sizes[tensor]; ++i)
      host[param_offsets_[tensor] + i] = normal(rng) * scale;
  };
  auto ones = [&](size_t tensor) {
    for (size_t i = 0; i < sizes[tensor]; ++i) host[param_offsets_[tensor] + i] = 1.f;
  };
  fill(0, 1.f);
  fill(1, 1.f);
  const float proj_scale = 1.f / std::sqrt(2.f * L);
  for (size_t l = 0; l < L; ++l) {
    const size_t base = 2 + l * kPerLayer;
    ones(base + kLn1W);
    ones(base + kLn2W);
    fill(base + kQkvW, 1.f);
    fill(base + kFcW, 1.f);
    fill(base + kAttProjW, proj_scale);
    fill(base + kFcProjW, proj_scale);
  }
  ones(sizes.size() - 2);

  master_ = static_cast<float*>(alloc(total * sizeof(float)));
  grads_ = static_cast<float*>(alloc(total * sizeof(float)));
  adam_m_ = static_cast<float*>(alloc(total * sizeof(float)));
  adam_v_ = static_cast<float*>(alloc(total * sizeof(float)));
  be_.upload(master_, host.data(), total * sizeof(float));
  working_ = be_.has_working_copy() ? alloc(total * be_.act_bytes()) : master_;
  if (be_.has_working_copy()) be_.copy_master_to_working(working_, master_, total);

  const size_t N = size_t(B) * T, a = be_.act_bytes();
  inputs_ = static_cast<int32_t*>(alloc(N * sizeof(int32_t)));
  targets_ = static_cast<int32_t*>(alloc(N * sizeof(int32_t)));
  encoded_ = alloc(N * C * a);
  layers_.resize(L);
  for (Layer& layer : layers_) {
    layer.ln1 = alloc(N * C * a);
    layer.qkv = alloc(N * 3 * C * a);
    layer.atty = alloc(N * C * a);
    layer.att_saved = alloc(be_.attention_saved_bytes(B, T, cfg_.n_head));
    layer.attproj = alloc(N * C * a);
    layer.resid2 = alloc(N * C * a);
    layer.ln2 = alloc(N * C * a);
    layer.fch = alloc(N * 4 * C * a);
    layer.fch_gelu = alloc(N * 4 * C * a);
    layer.fcproj = alloc(N * C * a);
    layer.resid3 = alloc(N * C * a);
    layer.ln1_mean = static_cast<float*>(alloc(N * sizeof(float)));
    layer.ln1_rstd = static_cast<float*>(alloc(N * sizeof(float)));
    layer.ln2_mean = static_cast<float*>(alloc(N * sizeof(float)));
    layer.ln2_rstd = static_cast<float*>(alloc(N * sizeof(float)));
  }
  lnf_ = alloc(N * C * a);
  lnf_mean_ = static_cast<float*>(alloc(N * sizeof(float)));
  lnf_rstd_ = static_cast<float*>(alloc(N * sizeof(float)));
  logits_ = alloc(N * V * a);
  losses_ = static_cast<float*>(alloc(N * sizeof(float)));
  dresid_ = alloc(N * C * a);
  dln_ = alloc(N * C * a);
  dqkv_ = alloc(N * 3 * C * a);
  datty_ = alloc(N * C * a);
  dfch_gelu_ = alloc(N * 4 * C * a);
  dfch_ = alloc(N * 4 * C * a);
}

Gpt2Step::~Gpt2Step() {
  be_.synchronize();
  for (void* ptr : allocations_) be_.release(ptr);
}

void Gpt2Step::zero_grad() {
  be_.fill_zero(grads_, (param_offsets_.back() + round8(cfg_.d_model)) * sizeof(float));
}

void Gpt2Step::micro_step(const std::vector<int32_t>& tokens, float dloss) {
  const size_t N = size_t(B_) * T_;
  if (tokens.size() < N + 1) throw std::invalid_argument("micro_step needs B*T+1 tokens");
  be_.upload(inputs_, tokens.data(), N * sizeof(int32_t));
  be_.upload(targets_, tokens.data() + 1, N * sizeof(int32_t));
  forward();
  backward(dloss);
}

void Gpt2Step::forward() {
  const int N = B_ * T_, C = cfg_.d_model, V = cfg_.vocab, NH = cfg_.n_head;
  const size_t a = be_.act_bytes();
  auto W = [&](size_t tensor) {
    return static_cast<const void*>(static_cast<const char*>(working_) +
                                    param_offsets_[tensor] * a);
  };
  be_.encoder_forward(encoded_, inputs_, W(0), W(1), B_, T_, C);
  const void* x = encoded_;
  for (int l = 0; l < cfg_.n_layer; ++l) {
    Layer& L = layers_[l];
    const size_t p = 2 + size_t(l) * kPerLayer;
    be_.layernorm_forward(L.ln1, L.ln1_mean, L.ln1_rstd, x, W(p + kLn1W), W(p + kLn1B), N, C);
    be_.matmul_forward(L.qkv, L.ln1, W(p + kQkvW), W(p + kQkvB), N, C, 3 * C, WeightLayout::kInOut);
    be_.attention_forward(L.atty, L.att_saved, L.qkv, B_, T_, C, NH);
    be_.matmul_forward(L.attproj, L.atty, W(p + kAttProjW), W(p + kAttProjB), N, C, C,
                       WeightLayout::kInOut);
    be_.residual_forward(L.resid2, x, L.attproj, size_t(N) * C);
    be_.layernorm_forward(L.ln2, L.ln2_mean, L.ln2_rstd, L.resid2, W(p + kLn2W), W(p + kLn2B), N,
                          C);
    be_.matmul_forward(L.fch, L.ln2, W(p + kFcW), W(p + kFcB), N, C, 4 * C, WeightLayout::kInOut);
    be_.gelu_forward(L.fch_gelu, L.fch, size_t(N) * 4 * C);
    be_.matmul_forward(L.fcproj, L.fch_gelu, W(p + kFcProjW), W(p + kFcProjB), N, 4 * C, C,
                       WeightLayout::kInOut);
    be_.residual_forward(L.resid3, L.resid2, L.fcproj, size_t(N) * C);
    x = L.resid3;
  }
  const size_t lnf = 2 + size_t(cfg_.n_layer) * kPerLayer;
  be_.layernorm_forward(lnf_, lnf_mean_, lnf_rstd_, x, W(lnf), W(lnf + 1), N, C);
  be_.matmul_forward(logits_, lnf_, W(0), nullptr, N, C, V, WeightLayout::kOutIn);
}

void Gpt2Step::backward(float dloss) {
  const int N = B_ * T_, C = cfg_.d_model, V = cfg_.vocab, NH = cfg_.n_head;
  const size_t a = be_.act_bytes(), NC = size_t(N) * C;
  auto W = [&](size_t tensor) {
    return static_cast<const void*>(static_cast<const char*>(working_) +
                                    param_offsets_[tensor] * a);
  };
  auto G = [&](size_t tensor) { return grads_ + param_offsets_[tensor]; };
  // dlogits overwrite the logits (the op writes, it does not add).
  be_.crossentropy_forward_backward(losses_, logits_, logits_, targets_, nullptr, dloss, N, V);
  const size_t lnf = 2 + size_t(cfg_.n_layer) * kPerLayer;
  be_.fill_zero(dln_, NC * a);
  be_.matmul_backward(dln_, G(0), nullptr, logits_, lnf_, W(0), N, C, V, WeightLayout::kOutIn);
  be_.fill_zero(dresid_, NC * a);
  const void* last = layers_.back().resid3;
  be_.layernorm_backward(dresid_, G(lnf), G(lnf + 1), dln_, last, W(lnf), lnf_mean_, lnf_rstd_, N,
                         C);
  for (int l = cfg_.n_layer - 1; l >= 0; --l) {
    Layer& L = layers_[l];
    const size_t p = 2 + size_t(l) * kPerLayer;
    const void* x = l == 0 ? encoded_ : layers_[l - 1].resid3;
    be_.fill_zero(dfch_gelu_, 4 * NC * a);
    be_.matmul_backward(dfch_gelu_, G(p + kFcProjW), G(p + kFcProjB), dresid_, L.fch_gelu,
                        W(p + kFcProjW), N, 4 * C, C, WeightLayout::kInOut);
    be_.fill_zero(dfch_, 4 * NC * a);
    be_.gelu_backward(dfch_, L.fch, dfch_gelu_, 4 * NC);
    be_.fill_zero(dln_, NC * a);
    be_.matmul_backward(dln_, G(p + kFcW), G(p + kFcB), dfch_, L.ln2, W(p + kFcW), N, C, 4 * C,
                        WeightLayout::kInOut);
    be_.layernorm_backward(dresid_, G(p + kLn2W), G(p + kLn2B), dln_, L.resid2, W(p + kLn2W),
                           L.ln2_mean, L.ln2_rstd, N, C);
    be_.fill_zero(datty_, NC * a);
    be_.matmul_backward(datty_, G(p + kAttProjW), G(p + kAttProjB), dresid_, L.atty,
                        W(p + kAttProjW), N, C, C, WeightLayout::kInOut);
    be_.fill_zero(dqkv_, 3 * NC * a);
    be_.attention_backward(dqkv_, datty_, L.qkv, L.atty, L.att_saved, B_, T_, C, NH);
    be_.fill_zero(dln_, NC * a);
    be_.matmul_backward(dln_, G(p + kQkvW), G(p + kQkvB), dqkv_, L.ln1, W(p + kQkvW), N, C, 3 * C,
                        WeightLayout::kInOut);
    be_.layernorm_backward(dresid_, G(p + kLn1W), G(p + kLn1B), dln_, x, W(p + kLn1W), L.ln1_mean,
                           L.ln1_rstd, N, C);
  }
  be_.encoder_backward(G(0), G(1), dresid_, inputs_, B_, T_, C);
}

double Gpt2Step::optimizer_step(int step, float lr) {
  const size_t total = param_offsets_.back() + round8(cfg_.d_model);
  const double norm = std::sqrt(be_.sum_squares(grads_, total));
  kernels::AdamWParams params;
  params.lr = lr;
  params.weight_decay = 0.1f;
  params.step = step;
  params.grad_scale = norm > 1.0 ? static_cast<float>(1.0 / (norm + 1e-6)) : 1.f;
  be_.adamw_update(master_, be_.has_working_copy() ? working_ : nullptr, grads_, adam_m_, adam_v_,
                   total, params);
  return norm;
}

float Gpt2Step::last_loss() {
  const size_t N = size_t(B_) * T_;
  std::vector<float> losses(N);
  be_.synchronize();
  be_.download(losses.data(), losses_, N * sizeof(float));
  double sum = 0;
  for (float loss : losses) sum += loss;
  return static_cast<float>(sum / N);
}

}  // namespace accum::bench

namespace accum::bench {

std::vector<float> Gpt2Step::master_weights() {
  const size_t total = param_offsets_.back() + round8(cfg_.d_model);
  std::vector<float> weights(total);
  be_.synchronize();
  be_.download(weights.data(), master_, total * sizeof(float));
  return weights;
}

}  // namespace accum::bench
