// bench/gpu/gpt2_step.h — one training step of the PRODUCT's GPT-2 (daemon/worker/model/
// gpt2.h) and AdamW (daemon/worker/train/optimizer.h), both needing only kernels/backend.h,
// for the GPU benchmark and the gpu tests on a host that may lack the daemon's proto/MPI
// stack: forward + backward per micro-batch into the fp32 gradient buffer, then global-norm
// clipping to 1.0 and the worker's AdamW (weight decay 0.1 on matrices only) in one process.
// Thread safety: none (one thread drives a Backend).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "daemon/worker/model/gpt2.h"
#include "daemon/worker/train/optimizer.h"
#include "kernels/backend.h"

namespace accum::bench {

struct Gpt2Config {
  int n_layer = 12, n_head = 12, d_model = 768, vocab = 50304, max_seq = 1024;
  spec::ModelConfig model_config() const;  // the product's description of the same model
};

class Gpt2Step {
 public:
  Gpt2Step(kernels::Backend& backend, const Gpt2Config& config, int B, int T, uint64_t seed);
  Gpt2Step(const Gpt2Step&) = delete;
  Gpt2Step& operator=(const Gpt2Step&) = delete;

  size_t num_parameters() const { return model_->num_params(); }
  // Bytes allocated on the device: weights, working copy, gradients, Adam state, activations.
  size_t allocated_bytes() const;

  // Starts a window of micro-batches: the next micro_step writes the fp32 gradients instead
  // of adding to them (the worker's trainer never zeroes the buffer either).
  void begin_window();
  // One micro-batch (tokens: B*T+1 host values; targets are the inputs shifted by one):
  // forward and backward into the fp32 gradients (written first in a window, then added). `dloss`
  // is the weight of each target's loss in the step's objective (1 / (B*T*K) for the mean over the
  // window).
  void micro_step(const std::vector<int32_t>& tokens, float dloss);
  // Global-norm clip to 1.0 and AdamW; returns the gradient norm (of the weighted objective).
  double optimizer_step(int step, float lr);
  // Mean loss per target over the micro_steps since the last call (synchronizes: the
  // losses stay on the device until asked for, as in the worker).
  float take_mean_loss();
  // The fp32 master weights, all tensors in canonical order (synchronizes).
  std::vector<float> master_weights() { return model_->download_params(); }
  // The fp32 gradient buffer: the unweighted sum since begin_window() (synchronizes).
  std::vector<float> gradients();

  // What a checkpoint holds (weights, Adam moments); restore() puts it back, as the
  // worker does when it resumes (the working copy is rebuilt from the master weights).
  struct State {
    std::vector<float> weights, m, v;
  };
  State save();
  void restore(const State& state);

 private:
  kernels::Backend& be_;
  std::unique_ptr<model::Gpt2> model_;
  int B_, T_;
  std::unique_ptr<train::AdamW> optimizer_;  // owns the whole flat buffer (one process)
  std::vector<int32_t> inputs_, targets_;
  std::vector<uint8_t> mask_;
  float dloss_ = 1.f;
  bool window_started_ = false;  // a micro_step ran since begin_window()
  size_t targets_since_take_ = 0;
};

}  // namespace accum::bench
