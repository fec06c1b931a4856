// model/gpt2.h — GPT-2 written once against kernels::Backend.
//
// Design choices (DESIGN.md "Model"):
//  * Parameters live in ONE flat fp32 buffer in a canonical, layer-major order
//    (wte, wpe, h.0.*, …, h.{L-1}.*, ln_f.*) with Hugging Face GPT2LMHeadModel names
//    and shapes (Conv1D weights are (in, out)). The gradient buffer has the same
//    layout, so the communicator reduces contiguous ranges and the backward can
//    announce "everything from offset X on is final" as it walks back through the layers.
//  * The backward WRITES the gradient buffer for a window's first micro-batch and ADDS into
//    it for the others (kernels::GradMode): K micro-batches accumulate by calling
//    forward/backward K times, and the buffer is never zeroed (no 4-bytes-per-parameter
//    memset per optimizer step, no GEMM reading zeros).
//  * A micro-step never waits for the device: inputs are uploaded without waiting, the
//    encoder backward buckets tokens from a host copy, and the losses are summed on the
//    device until take_loss_sum() reads them (once per optimizer step in the trainer).
//  * The loss is a SUM over counted targets (dloss = 1 per target); the trainer
//    divides once by the global number of counted targets after the reduction.
//  * Activations are allocated once for (B, T) and reused, so memory does not grow with K.
//  * The tied LM head runs over the back end's padded vocabulary (Backend::row_stride: 50304
//    for GPT-2's 50257 on CUDA, where an odd vocabulary gets only cuBLASLt's generic kernels):
//    the weight rows after wte's are what follows it in the working copy, their logits are
//    masked and their gradients are 0; the parameters and the loss keep the real vocabulary.
//  * The weight gradients of the backward are Backend::side_work beside the chain of
//    activation gradients, each joined before the chain rewrites what it reads: on CUDA with
//    ACCUM_CUDA_SIDE_STREAM=1 they run on a second stream, concurrently; the bits are the same.
//
// Depends only on kernels/backend.h (no proto, absl or I/O), so the standalone GPU build
// (bench/gpu) trains this very model; Hugging Face weights load through gpt2_hf.h.
//
// Thread safety: not thread-safe; owned and driven by the trainer's thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "daemon/spec/model_config.h"
#include "kernels/backend.h"

namespace accum::model {

struct ParamTensor {
  std::string name;  // Hugging Face name with the "transformer." prefix
  std::vector<int64_t> shape;
  size_t offset = 0;  // in elements, into the flat buffer
  size_t numel = 0;
  bool weight_decay = false;  // tensors with two or more dimensions
};

// The canonical parameter table for a configuration (no allocation).
std::vector<ParamTensor> gpt2_parameter_table(const spec::ModelConfig& config);

// Bytes of activations and backward scratch a Gpt2 of this shape allocates for one
// micro-batch of (B, T) on `backend` (what Gpt2::activation_bytes() will report),
// computed without allocating: the memory plan and the out-of-memory advice use it.
size_t gpt2_activation_bytes(const kernels::Backend& backend, const spec::ModelConfig& config,
                             int B, int T);

// Elements of the act-dtype working copy of the weights (0 without one): the parameters, plus
// zeroed slack when fewer than the LM head's padding rows follow wte (Gpt2::forward; usually
// none).
size_t gpt2_working_elements(const kernels::Backend& backend, const spec::ModelConfig& config);

class Gpt2 {
 public:
  // Allocates parameters, gradients and activations for micro-batches of (B, T)
  // on `backend`, which must outlive the model. Parameters start at zero.
  Gpt2(kernels::Backend* backend, const spec::ModelConfig& config, int B, int T);
  ~Gpt2();
  Gpt2(const Gpt2&) = delete;
  Gpt2& operator=(const Gpt2&) = delete;

  const spec::ModelConfig& config() const { return config_; }
  const std::vector<ParamTensor>& tensors() const { return tensors_; }
  size_t num_params() const { return num_params_; }
  kernels::Backend* backend() const { return backend_; }
  float* params() { return master_; }  // fp32 master weights (device)
  float* grads() { return grads_; }    // fp32 gradient accumulation buffer (device)
  void* working_copy() {
    return working_;
  }  // act-dtype weights the forward reads (== params() on fp32)
  // Bytes of activation memory for one micro-batch (for the memory report).
  size_t activation_bytes() const { return activation_bytes_; }

  // N(0, 0.02) weights, residual projections scaled by 1/sqrt(2*n_layer), zero biases,
  // unit LayerNorm gains; deterministic in `seed`.
  void init_random(uint64_t seed);
  // Host copies of every tensor in canonical order (for tests and the GPU benchmark;
  // checkpoints read params() a piece at a time, kernels/host_staging.h).
  std::vector<float> download_params();
  void upload_params(const std::vector<float>& host);
  // After the master weights changed outside adamw_update: refresh the working copy.
  void sync_working_copy();

  void zero_grads();  // for tests: a backward(kAdd) after it equals backward(kWrite)
  // Forward of one micro-batch (host arrays of B*T; they may be reused on return). Adds
  // the SUM of the per-target losses over counted targets to a device-side total that
  // take_loss_sum() reads, so a micro-step never waits for the device. When
  // `for_backward`, dlogits are kept for backward().
  void forward(const int32_t* inputs, const int32_t* targets, const uint8_t* mask,
               bool for_backward);
  // The summed losses of every forward since the last call (waits for them), and resets.
  double take_loss_sum();
  // Backward of the last forward: writes (kWrite) or adds (kAdd) d(sum loss)/d(param) into
  // grads(). `on_ready(offset)` is called whenever every gradient at or after `offset` is
  // final.
  void backward(kernels::GradMode mode, const std::function<void(size_t)>& on_ready = {});

 private:
  struct Layer;
  void* working(size_t offset) const;  // act-dtype pointer to a parameter
  void* act_alloc(size_t elements);
  float* f32_alloc(size_t elements);
  // Where the LayerNorm after block l-1 writes: block l's ln1, or lnf when l == n_layer.
  struct NextLayerNorm {
    void* out;
    float* mean;
    float* rstd;
    const void* weight;
    const void* bias;
  };
  NextLayerNorm next_layernorm(int l) const;
  void layer_forward(int l, const void* residual_in);
  void layer_backward(int l, const void* residual_in, kernels::GradMode mode);

  kernels::Backend* backend_;
  spec::ModelConfig config_;
  int B_, T_;
  std::vector<ParamTensor> tensors_;
  size_t num_params_ = 0;
  float* master_ = nullptr;
  float* grads_ = nullptr;
  void* working_ = nullptr;  // == master_ on fp32 back ends
  std::vector<void*> allocations_;
  size_t activation_bytes_ = 0;

  struct Acts;
  std::vector<Layer> layers_;
  Acts* acts_ = nullptr;
};

// Model FLOPs of one token's forward + backward, the PaLM and llm.c count behind MFU: 6 per
// parameter for the matmuls, plus 12 L C T for attention's scores and weighted values (not
// halved for causality). The trainer's metrics and bench/gpu's benchmark use it.
double flops_per_token(size_t params, int n_layer, int d_model, int T);

}  // namespace accum::model
