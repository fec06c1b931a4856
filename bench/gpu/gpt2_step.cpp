// bench/gpu/gpt2_step.cpp — the benchmark's step around model::Gpt2 (see gpt2_step.h).
#include "bench/gpu/gpt2_step.h"

#include <cmath>
#include <stdexcept>

namespace accum::bench {

spec::ModelConfig Gpt2Config::model_config() const {
  spec::ModelConfig config;
  config.n_layer = n_layer;
  config.n_head = n_head;
  config.d_model = d_model;
  config.vocab_size = vocab;
  config.max_seq_len = max_seq;
  return config;
}

Gpt2Step::Gpt2Step(kernels::Backend& backend, const Gpt2Config& config, int B, int T, uint64_t seed)
    : be_(backend), B_(B), T_(T) {
  model_ = std::make_unique<model::Gpt2>(&backend, config.model_config(), B, T);
  model_->init_random(seed);
  optimizer_ = std::make_unique<train::AdamW>(&backend, model_->tensors(),
                                              std::vector<comm::Range>{{0, model_->num_params()}});
  const size_t N = size_t(B) * T;
  inputs_.resize(N);
  targets_.resize(N);
  mask_.assign(N, 1);
}

size_t Gpt2Step::allocated_bytes() const {
  const size_t P = model_->num_params();
  const size_t working = model::gpt2_working_elements(be_, model_->config()) * be_.act_bytes();
  // master + gradients + Adam m and v, all fp32
  return 4 * P * sizeof(float) + working + model_->activation_bytes();
}

void Gpt2Step::begin_window() { window_started_ = false; }

std::vector<float> Gpt2Step::gradients() {
  std::vector<float> host(model_->num_params());
  be_.download(host.data(), model_->grads(), host.size() * sizeof(float));
  return host;
}

Gpt2Step::State Gpt2Step::save() {
  State state;
  state.weights = model_->download_params();
  optimizer_->download(&state.m, &state.v);
  return state;
}

void Gpt2Step::restore(const State& state) {
  model_->upload_params(state.weights);
  optimizer_->upload(state.m, state.v);
}

void Gpt2Step::micro_step(const std::vector<int32_t>& tokens, float dloss) {
  const size_t N = inputs_.size();
  if (tokens.size() < N + 1) throw std::invalid_argument("micro_step needs B*T+1 tokens");
  std::copy(tokens.begin(), tokens.begin() + N, inputs_.begin());
  std::copy(tokens.begin() + 1, tokens.begin() + N + 1, targets_.begin());
  // The model's loss is the SUM over targets (the worker normalizes after the reduction);
  // here the objective weights each target by dloss, applied as AdamW's grad_scale.
  model_->forward(inputs_.data(), targets_.data(), mask_.data(), true);
  // As the worker's trainer: the window's first backward writes the gradients.
  model_->backward(window_started_ ? kernels::GradMode::kAdd : kernels::GradMode::kWrite);
  window_started_ = true;
  dloss_ = dloss;
  targets_since_take_ += N;
}

float Gpt2Step::take_mean_loss() {
  const double sum = model_->take_loss_sum();
  const size_t targets = targets_since_take_;
  targets_since_take_ = 0;
  return targets > 0 ? static_cast<float>(sum / static_cast<double>(targets)) : 0.f;
}

double Gpt2Step::optimizer_step(int step, float lr) {
  const double norm = std::sqrt(optimizer_->owned_sum_squares(model_->grads())) * dloss_;
  const double clip = norm > 1.0 ? 1.0 / (norm + 1e-6) : 1.0;
  kernels::AdamWParams params;
  params.lr = lr;
  params.step = step;
  params.grad_scale = static_cast<float>(dloss_ * clip);
  optimizer_->step(model_->params(), be_.has_working_copy() ? model_->working_copy() : nullptr,
                   model_->grads(), params, /*weight_decay=*/0.1f);
  return norm;
}

}  // namespace accum::bench
