// bench/gpu/gpt2_step.h — a compact GPT-2 training step written against kernels/backend.h,
// for the GPU benchmark only (the product's model is daemon/worker/model, which needs the
// spec/proto stack that a bare GPU host lacks). Same architecture as DESIGN.md: learned
// token+position embeddings, pre-LN blocks, causal attention, 4C tanh-GELU MLP, final LN,
// LM head tied to wte, biases everywhere.
//
// Memory: one fp32 master slab, one working (act dtype) slab, one fp32 grad slab, fp32 m/v;
// activations for one micro-batch (B,T) kept for the backward. Every tensor starts at a
// multiple of 8 elements so 16-byte vector paths apply.
// Thread safety: none (one thread drives a Backend).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"

namespace accum::bench {

struct Gpt2Config {
  int n_layer = 12, n_head = 12, d_model = 768, vocab = 50304, max_seq = 1024;
};

class Gpt2Step {
 public:
  Gpt2Step(kernels::Backend& backend, const Gpt2Config& config, int B, int T, uint64_t seed);
  ~Gpt2Step();
  Gpt2Step(const Gpt2Step&) = delete;
  Gpt2Step& operator=(const Gpt2Step&) = delete;

  size_t num_parameters() const { return num_params_; }
  // Bytes this object allocated on the device (parameters, grads, state, activations).
  size_t allocated_bytes() const { return allocated_bytes_; }

  void zero_grad();
  // One micro-batch: forward (mean loss over B*T tokens scaled by 1/K for accumulation)
  // and backward, adding into the fp32 gradients. tokens: B*T+1 host values.
  void micro_step(const std::vector<int32_t>& tokens, float dloss);
  // Global-norm clip to 1.0 and AdamW; returns the gradient norm.
  double optimizer_step(int step, float lr);
  // Mean loss of the last micro_step (synchronizes).
  float last_loss();
  // The fp32 master weights, all tensors concatenated (padding included; synchronizes).
  std::vector<float> master_weights();

 private:
  struct Layer;
  void* alloc(size_t bytes);
  void forward();
  void backward(float dloss);

  kernels::Backend& be_;
  Gpt2Config cfg_;
  int B_, T_;
  size_t num_params_ = 0, allocated_bytes_ = 0;
  std::vector<void*> allocations_;
  std::vector<size_t> param_offsets_;  // element offsets into the slabs, one per tensor
  float* master_ = nullptr;
  void* working_ = nullptr;
  float* grads_ = nullptr;
  float* adam_m_ = nullptr;
  float* adam_v_ = nullptr;
  int32_t* inputs_ = nullptr;
  int32_t* targets_ = nullptr;
  std::vector<Layer> layers_;
  // Activations outside the blocks.
  void *encoded_ = nullptr, *lnf_ = nullptr, *logits_ = nullptr;
  float *lnf_mean_ = nullptr, *lnf_rstd_ = nullptr, *losses_ = nullptr;
  // Activation-gradient scratch (zeroed before each use: every backward adds).
  void *dresid_ = nullptr, *dln_ = nullptr, *dqkv_ = nullptr, *datty_ = nullptr,
       *dfch_gelu_ = nullptr, *dfch_ = nullptr;
};

}  // namespace accum::bench
