// model/gpt2.cpp — GPT-2 forward/backward over the op interface (llm.c's structure:
// one residual-gradient buffer flows back through the blocks; every op adds).
#include "daemon/worker/model/gpt2.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>

#include "kernels/host_staging.h"

namespace accum::model {
namespace {

// The op sequences run_recorded may record (Backend::run_recorded), per Gpt2: the forward
// (training or evaluation), and the backward's segments from kRecordBackward on (the head,
// then each layer; writing or adding the gradients).
enum RecordKey { kRecordForwardTrain, kRecordForwardEval, kRecordBackward };

using kernels::GradMode;
using kernels::WeightLayout;

// Per-block parameter slots, in canonical order within the block.
enum Slot {
  kLn1W,
  kLn1B,
  kAttnW,
  kAttnB,
  kAttnProjW,
  kAttnProjB,
  kLn2W,
  kLn2B,
  kFcW,
  kFcB,
  kFcProjW,
  kFcProjB,
  kSlotCount
};

// splitmix64 → uniform (0,1) → Box-Muller: platform-independent, unlike std::normal_distribution.
class NormalRng {
 public:
  explicit NormalRng(uint64_t seed) : state_(seed) {}
  double uniform() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (static_cast<double>(z >> 11) + 0.5) * (1.0 / 9007199254740992.0);
  }
  float normal(float stddev) {
    if (has_spare_) {
      has_spare_ = false;
      return static_cast<float>(spare_ * stddev);
    }
    const double u1 = uniform(), u2 = uniform();
    const double radius = std::sqrt(-2.0 * std::log(u1));
    spare_ = radius * std::sin(2.0 * M_PI * u2);
    has_spare_ = true;
    return static_cast<float>(radius * std::cos(2.0 * M_PI * u2) * stddev);
  }

 private:
  uint64_t state_;
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace

std::vector<ParamTensor> gpt2_parameter_table(const spec::ModelConfig& config) {
  const int64_t C = config.d_model;
  std::vector<ParamTensor> table;
  size_t offset = 0;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    ParamTensor tensor;
    tensor.name = "transformer." + name;
    tensor.numel = 1;
    for (int64_t dim : shape) tensor.numel *= static_cast<size_t>(dim);
    tensor.weight_decay = shape.size() >= 2;
    tensor.shape = std::move(shape);
    tensor.offset = offset;
    offset += tensor.numel;
    table.push_back(std::move(tensor));
  };
  add("wte.weight", {config.vocab_size, C});
  add("wpe.weight", {config.max_seq_len, C});
  for (int l = 0; l < config.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    add(p + "ln_1.weight", {C});
    add(p + "ln_1.bias", {C});
    add(p + "attn.c_attn.weight", {C, 3 * C});
    add(p + "attn.c_attn.bias", {3 * C});
    add(p + "attn.c_proj.weight", {C, C});
    add(p + "attn.c_proj.bias", {C});
    add(p + "ln_2.weight", {C});
    add(p + "ln_2.bias", {C});
    add(p + "mlp.c_fc.weight", {C, 4 * C});
    add(p + "mlp.c_fc.bias", {4 * C});
    add(p + "mlp.c_proj.weight", {4 * C, C});
    add(p + "mlp.c_proj.bias", {C});
  }
  add("ln_f.weight", {C});
  add("ln_f.bias", {C});
  return table;
}

size_t gpt2_working_elements(const kernels::Backend& backend, const spec::ModelConfig& config) {
  if (!backend.has_working_copy()) return 0;
  const auto table = gpt2_parameter_table(config);
  const size_t params = table.back().offset + table.back().numel;
  // The LM head reads row_stride(V) rows from wte, the first tensor, on.
  const size_t padded_rows = static_cast<size_t>(backend.row_stride(config.vocab_size));
  return std::max(params, padded_rows * static_cast<size_t>(config.d_model));
}

namespace {
// What one token of an uploaded micro-batch takes on the device: its input and target ids
// (int32) and its mask byte.
constexpr size_t kBatchBytesPerToken = 2 * sizeof(int32_t) + sizeof(uint8_t);
}  // namespace

size_t gpt2_activation_bytes(const kernels::Backend& backend, const spec::ModelConfig& config,
                             int B, int T) {
  const size_t N = static_cast<size_t>(B) * T, C = config.d_model;
  const size_t V = static_cast<size_t>(backend.row_stride(config.vocab_size));  // padded rows
  const size_t act = backend.act_bytes(), f32 = sizeof(float);
  // Per block: ln1, atty, attproj, residual2, ln2, fcproj, residual3 (7C), qkv (3C),
  // fch and fch_gelu (8C); LayerNorm statistics (4 per row); attention's saved state.
  const size_t per_layer =
      N * 18 * C * act + N * 4 * f32 + backend.attention_saved_bytes(B, T, config.n_head);
  // Whole model: encoded, lnf (2C), logits (V, in the back end's padded rows), backward
  // scratch dresidual, dln, datty (3C), dqkv (3C), dfch (4C); lnf statistics and losses (3
  // per row); the uploaded batch (int32 inputs and targets, a byte of mask per token) and
  // the loss sum; what the back end's ops borrow on top.
  const size_t global = N * (12 * C + V) * act + N * 3 * f32 + N * kBatchBytesPerToken +
                        sizeof(double) +
                        backend.scratch_bytes(N, config.d_model, config.n_head, config.vocab_size);
  return config.n_layer * per_layer + global;
}

// Activations of one block for one micro-batch (act dtype unless noted).
struct Gpt2::Layer {
  size_t param[kSlotCount];  // offsets of the block's tensors in the flat buffer
  void* ln1;                 // (B,T,C)
  float* ln1_mean;           // (B,T) fp32
  float* ln1_rstd;
  void* qkv;        // (B,T,3C)
  void* atty;       // (B,T,C)
  void* att_saved;  // back-end specific
  void* attproj;    // (B,T,C)
  void* residual2;  // (B,T,C)
  void* ln2;
  float* ln2_mean;
  float* ln2_rstd;
  void* fch;        // (B,T,4C)
  void* fch_gelu;   // (B,T,4C)
  void* fcproj;     // (B,T,C)
  void* residual3;  // (B,T,C)
};

// Whole-model activations and backward scratch.
struct Gpt2::Acts {
  int32_t* inputs;                   // (B,T)
  int32_t* targets;                  // (B,T)
  uint8_t* mask;                     // (B,T)
  std::vector<int32_t> host_inputs;  // (B,T) the last forward's, for encoder_backward
  double* loss_sum;                  // sum of the losses of every forward since take_loss_sum()
  void* encoded;                     // (B,T,C)
  void* lnf;                         // (B,T,C)
  float* lnf_mean;
  float* lnf_rstd;
  void* logits;       // (B,T,V) in rows logits_stride apart, replaced by dlogits in forward()
  int logits_stride;  // Backend::row_stride(V): V or more (aligned rows for an odd V)
  float* losses;  // (B,T) fp32
  // backward scratch (act dtype): the backward ops write these (kernels/backend.h), except
  // dresidual, the residual stream's gradient, which layernorm_backward adds into
  void* dresidual;  // (B,T,C), zeroed once per backward
  void* dln;        // (B,T,C)
  void* datty;      // (B,T,C)
  void* dqkv;       // (B,T,3C)
  void* dfch;       // (B,T,4C)
  size_t ln_f_offset;
  size_t wte_offset, wpe_offset;
};

Gpt2::Gpt2(kernels::Backend* backend, const spec::ModelConfig& config, int B, int T)
    : backend_(backend), config_(config), B_(B), T_(T) {
  if (T > config.max_seq_len) {
    throw std::invalid_argument("seq_len " + std::to_string(T) + " exceeds max_seq_len " +
                                std::to_string(config.max_seq_len));
  }
  tensors_ = gpt2_parameter_table(config);
  num_params_ = tensors_.back().offset + tensors_.back().numel;
  master_ = f32_alloc(num_params_);
  grads_ = f32_alloc(num_params_);
  // A back end without a working copy keeps its logits in packed rows: the LM head reads
  // padding rows (see forward()) only from a working copy, allocated with room for them.
  if (!backend_->has_working_copy() &&
      backend_->row_stride(config.vocab_size) != config.vocab_size) {
    throw std::logic_error("Gpt2: a back end without a working copy must keep packed logits");
  }
  working_ =
      backend_->has_working_copy() ? act_alloc(gpt2_working_elements(*backend_, config)) : master_;

  const size_t N = static_cast<size_t>(B) * T, C = config.d_model, V = config.vocab_size;
  const size_t before = activation_bytes_;
  acts_ = new Acts();
  acts_->inputs = static_cast<int32_t*>(backend_->alloc(N * sizeof(int32_t)));
  acts_->targets = static_cast<int32_t*>(backend_->alloc(N * sizeof(int32_t)));
  acts_->mask = static_cast<uint8_t*>(backend_->alloc(N));
  acts_->loss_sum = static_cast<double*>(backend_->alloc(sizeof(double)));
  allocations_.insert(allocations_.end(),
                      {acts_->inputs, acts_->targets, acts_->mask, acts_->loss_sum});
  activation_bytes_ += N * (2 * sizeof(int32_t) + sizeof(uint8_t)) + sizeof(double);
  acts_->encoded = act_alloc(N * C);
  layers_.resize(config.n_layer);
  size_t t = 2;  // tensors_[0] = wte, [1] = wpe
  for (int l = 0; l < config.n_layer; ++l) {
    Layer& layer = layers_[l];
    for (int s = 0; s < kSlotCount; ++s) layer.param[s] = tensors_[t++].offset;
    layer.ln1 = act_alloc(N * C);
    layer.ln1_mean = f32_alloc(N);
    layer.ln1_rstd = f32_alloc(N);
    layer.qkv = act_alloc(N * 3 * C);
    layer.atty = act_alloc(N * C);
    const size_t saved = backend_->attention_saved_bytes(B, T, config.n_head);
    layer.att_saved = backend_->alloc(saved);
    allocations_.push_back(layer.att_saved);
    activation_bytes_ += saved;
    layer.attproj = act_alloc(N * C);
    layer.residual2 = act_alloc(N * C);
    layer.ln2 = act_alloc(N * C);
    layer.ln2_mean = f32_alloc(N);
    layer.ln2_rstd = f32_alloc(N);
    layer.fch = act_alloc(N * 4 * C);
    layer.fch_gelu = act_alloc(N * 4 * C);
    layer.fcproj = act_alloc(N * C);
    layer.residual3 = act_alloc(N * C);
  }
  acts_->ln_f_offset = tensors_[t].offset;
  acts_->wte_offset = tensors_[0].offset;
  acts_->wpe_offset = tensors_[1].offset;
  acts_->lnf = act_alloc(N * C);
  acts_->lnf_mean = f32_alloc(N);
  acts_->lnf_rstd = f32_alloc(N);
  acts_->logits_stride = backend_->row_stride(static_cast<int>(V));
  acts_->logits = act_alloc(N * acts_->logits_stride);
  acts_->losses = f32_alloc(N);
  acts_->dresidual = act_alloc(N * C);
  acts_->dln = act_alloc(N * C);
  acts_->datty = act_alloc(N * C);
  acts_->dqkv = act_alloc(N * 3 * C);
  acts_->dfch = act_alloc(N * 4 * C);
  activation_bytes_ -= before;
}

Gpt2::~Gpt2() {
  backend_->forget_recorded(this);
  for (void* ptr : allocations_) backend_->release(ptr);
  delete acts_;
}

void* Gpt2::act_alloc(size_t elements) {
  const size_t bytes = elements * backend_->act_bytes();
  void* ptr = backend_->alloc(bytes);
  allocations_.push_back(ptr);
  activation_bytes_ += bytes;
  return ptr;
}

float* Gpt2::f32_alloc(size_t elements) {
  void* ptr = backend_->alloc(elements * sizeof(float));
  allocations_.push_back(ptr);
  activation_bytes_ += elements * sizeof(float);
  return static_cast<float*>(ptr);
}

void* Gpt2::working(size_t offset) const {
  return static_cast<char*>(working_) + offset * backend_->act_bytes();
}

void Gpt2::init_random(uint64_t seed) {
  // Written a piece at a time (in place on the CPU), so the host never holds a second copy of
  // the weights; the draws are the same sequence as one pass over all of them.
  kernels::HostStaging staging(backend_);
  NormalRng rng(seed);
  const float residual_std = 0.02f / std::sqrt(2.0f * config_.n_layer);
  for (const ParamTensor& tensor : tensors_) {
    const bool is_ln_gain =
        tensor.name.find("ln_") != std::string::npos && tensor.name.ends_with(".weight");
    const bool is_matrix = tensor.shape.size() >= 2;
    const float stddev = tensor.name.ends_with("c_proj.weight") ? residual_std : 0.02f;
    for (size_t first = 0; first < tensor.numel; first += kernels::HostStaging::kPieceFloats) {
      const size_t n = std::min(tensor.numel - first, kernels::HostStaging::kPieceFloats);
      float* device = master_ + tensor.offset + first;
      float* dst = staging.buffer_for(device, n);
      if (is_ln_gain) {
        std::fill(dst, dst + n, 1.0f);
      } else if (is_matrix) {
        for (size_t i = 0; i < n; ++i) dst[i] = rng.normal(stddev);
      } else {
        std::fill(dst, dst + n, 0.0f);  // biases
      }
      staging.write(device, n);
    }
  }
  sync_working_copy();
}

std::vector<float> Gpt2::download_params() {
  std::vector<float> host(num_params_);
  backend_->download(host.data(), master_, num_params_ * sizeof(float));
  return host;
}

void Gpt2::upload_params(const std::vector<float>& host) {
  backend_->upload(master_, host.data(), num_params_ * sizeof(float));
  sync_working_copy();
}

void Gpt2::sync_working_copy() {
  if (backend_->has_working_copy())
    backend_->copy_master_to_working(working_, master_, num_params_);
}

void Gpt2::zero_grads() { backend_->fill_zero(grads_, num_params_ * sizeof(float)); }

// On entry layers_[l].ln1 already holds LayerNorm 1 of `residual` (fused into the previous
// block's last residual add, or computed after the encoder). On exit the block's output
// residual3 is stored together with the LayerNorm that consumes it next: block l+1's ln1,
// or the final lnf.
void Gpt2::layer_forward(int l, const void* residual) {
  const int C = config_.d_model, NH = config_.n_head, N = B_ * T_;
  Layer& a = layers_[l];
  auto* be = backend_;
  be->matmul_forward(a.qkv, a.ln1, working(a.param[kAttnW]), working(a.param[kAttnB]), N, C, 3 * C,
                     WeightLayout::kInOut);
  be->attention_forward(a.atty, a.att_saved, a.qkv, B_, T_, C, NH);
  be->matmul_forward(a.attproj, a.atty, working(a.param[kAttnProjW]), working(a.param[kAttnProjB]),
                     N, C, C, WeightLayout::kInOut);
  be->residual_layernorm_forward(a.residual2, a.ln2, a.ln2_mean, a.ln2_rstd, residual, a.attproj,
                                 working(a.param[kLn2W]), working(a.param[kLn2B]), N, C);
  be->matmul_gelu_forward(a.fch_gelu, a.fch, a.ln2, working(a.param[kFcW]), working(a.param[kFcB]),
                          N, C, 4 * C, WeightLayout::kInOut);
  be->matmul_forward(a.fcproj, a.fch_gelu, working(a.param[kFcProjW]), working(a.param[kFcProjB]),
                     N, 4 * C, C, WeightLayout::kInOut);
  const NextLayerNorm next = next_layernorm(l + 1);
  be->residual_layernorm_forward(a.residual3, next.out, next.mean, next.rstd, a.residual2, a.fcproj,
                                 next.weight, next.bias, N, C);
}

Gpt2::NextLayerNorm Gpt2::next_layernorm(int l) const {
  if (l < config_.n_layer) {
    const Layer& a = layers_[l];
    return {a.ln1, a.ln1_mean, a.ln1_rstd, working(a.param[kLn1W]), working(a.param[kLn1B])};
  }
  return {acts_->lnf, acts_->lnf_mean, acts_->lnf_rstd, working(acts_->ln_f_offset),
          working(acts_->ln_f_offset + config_.d_model)};
}

void Gpt2::forward(const int32_t* inputs, const int32_t* targets, const uint8_t* mask,
                   bool for_backward) {
  const int C = config_.d_model, V = config_.vocab_size, N = B_ * T_;
  auto* be = backend_;
  acts_->host_inputs.assign(inputs, inputs + N);
  be->upload(acts_->inputs, inputs, N * sizeof(int32_t));
  be->upload(acts_->targets, targets, N * sizeof(int32_t));
  be->upload(acts_->mask, mask, N);
  // From the uploaded tokens on, the same ops on the same buffers every time: one record.
  be->run_recorded(this, for_backward ? kRecordForwardTrain : kRecordForwardEval, [&] {
    be->encoder_forward(acts_->encoded, acts_->inputs, working(acts_->wte_offset),
                        working(acts_->wpe_offset), B_, T_, C);
    const NextLayerNorm first = next_layernorm(0);
    be->layernorm_forward(first.out, first.mean, first.rstd, acts_->encoded, first.weight,
                          first.bias, N, C);
    const void* residual = acts_->encoded;
    for (int l = 0; l < config_.n_layer; ++l) {
      layer_forward(l, residual);
      residual = layers_[l].residual3;
    }
    // lnf was written with the last block's residual (or right after the encoder). The LM
    // head computes logits_stride (Vp >= V) columns: with an odd vocabulary, cuBLASLt has only
    // generic kernels for the products over V (GPT-2's 50257 on an H200: 6.2 ms instead of
    // 0.9 for the forward, RESULTS 4.19). Rows V..Vp of the weight are what follows wte in the
    // working copy (wpe's first rows, or slack: gpt2_working_elements): their logits are
    // masked by the classifier, which writes 0 as their dlogits, so they add nothing to dln.
    const int Vp = acts_->logits_stride;
    be->matmul_forward(acts_->logits, acts_->lnf, working(acts_->wte_offset), nullptr, N, C, Vp,
                       WeightLayout::kOutIn, Vp);
    // dloss = 1: the gradient of the SUM of counted losses (normalized after the reduction).
    be->crossentropy_forward_backward(acts_->losses, for_backward ? acts_->logits : nullptr,
                                      acts_->logits, acts_->targets, acts_->mask, 1.0f, N, V,
                                      acts_->logits_stride);
    be->sum_add(acts_->loss_sum, acts_->losses, N);
  });
}

double Gpt2::take_loss_sum() {
  double sum = 0;
  backend_->download(&sum, acts_->loss_sum, sizeof(double));
  backend_->fill_zero(acts_->loss_sum, sizeof(double));
  return sum;
}

void Gpt2::layer_backward(int l, const void* residual, GradMode mode) {
  const int C = config_.d_model, NH = config_.n_head, N = B_ * T_;
  Layer& a = layers_[l];
  auto* be = backend_;
  float* g = grads_;
  // The activation-gradient chain runs in order; each weight gradient is side work
  // (Backend::side_work: on CUDA it may overlap the chain) joined before the chain next
  // writes what it reads: dresidual (rewritten by each LayerNorm backward), dfch and dqkv
  // (rewritten by the block below, after the segment's closing join).
  // dresidual holds d(residual3); residual3 = residual2 + fcproj.
  // dfch = (dresidual @ Wproj^T) * gelu'(fch). Activation gradients are written: no zeroing.
  // The projections' bias gradients are the column sums of dresidual: the LayerNorm backward
  // that last added into it summed them (its dinp_sum), so these calls pass no dbias.
  be->matmul_gelu_backward(acts_->dfch, nullptr, nullptr, acts_->dresidual, a.fch_gelu, a.fch,
                           working(a.param[kFcProjW]), N, 4 * C, C, WeightLayout::kInOut, mode);
  const int64_t fcproj_dw = be->side_work([&] {
    be->matmul_backward(nullptr, g + a.param[kFcProjW], nullptr, acts_->dresidual, a.fch_gelu,
                        working(a.param[kFcProjW]), N, 4 * C, C, WeightLayout::kInOut, mode);
  });
  be->matmul_backward(acts_->dln, nullptr, nullptr, acts_->dfch, a.ln2, working(a.param[kFcW]), N,
                      C, 4 * C, WeightLayout::kInOut, mode);
  be->side_work([&] {
    be->matmul_backward(nullptr, g + a.param[kFcW], g + a.param[kFcB], acts_->dfch, a.ln2,
                        working(a.param[kFcW]), N, C, 4 * C, WeightLayout::kInOut, mode);
  });
  be->join_side_work(fcproj_dw);  // it reads dresidual, which the LayerNorm backward rewrites
  be->layernorm_backward(acts_->dresidual, g + a.param[kLn2W], g + a.param[kLn2B],
                         g + a.param[kAttnProjB], acts_->dln, a.residual2, working(a.param[kLn2W]),
                         a.ln2_mean, a.ln2_rstd, N, C, mode);
  // dresidual now holds d(residual2); residual2 = residual + attproj.
  be->matmul_backward(acts_->datty, nullptr, nullptr, acts_->dresidual, a.atty,
                      working(a.param[kAttnProjW]), N, C, C, WeightLayout::kInOut, mode);
  const int64_t attproj_dw = be->side_work([&] {
    be->matmul_backward(nullptr, g + a.param[kAttnProjW], nullptr, acts_->dresidual, a.atty,
                        working(a.param[kAttnProjW]), N, C, C, WeightLayout::kInOut, mode);
  });
  be->attention_backward(acts_->dqkv, acts_->datty, a.qkv, a.atty, a.att_saved, B_, T_, C, NH);
  be->matmul_backward(acts_->dln, nullptr, nullptr, acts_->dqkv, a.ln1, working(a.param[kAttnW]), N,
                      C, 3 * C, WeightLayout::kInOut, mode);
  be->side_work([&] {
    be->matmul_backward(nullptr, g + a.param[kAttnW], g + a.param[kAttnB], acts_->dqkv, a.ln1,
                        working(a.param[kAttnW]), N, C, 3 * C, WeightLayout::kInOut, mode);
  });
  be->join_side_work(attproj_dw);  // as above: dresidual is rewritten next
  // d(residual in) is d(residual3) of the block below: its MLP projection's bias gradient.
  float* below_fcproj_bias = l > 0 ? g + layers_[l - 1].param[kFcProjB] : nullptr;
  be->layernorm_backward(acts_->dresidual, g + a.param[kLn1W], g + a.param[kLn1B],
                         below_fcproj_bias, acts_->dln, residual, working(a.param[kLn1W]),
                         a.ln1_mean, a.ln1_rstd, N, C, mode);
  // dresidual now holds d(residual in) for the block below. The block's gradients are
  // complete once the side work is joined (the caller's on_ready reduces them).
  be->join_side_work();
}

void Gpt2::backward(GradMode mode, const std::function<void(size_t)>& on_ready) {
  const int C = config_.d_model, V = config_.vocab_size, N = B_ * T_, L = config_.n_layer;
  const size_t act = backend_->act_bytes();
  auto* be = backend_;
  float* g = grads_;
  // Before the encoder, the backward is the same ops on the same buffers every time: one
  // record per segment (the head, then each layer) and mode, with on_ready between them.
  auto segment = [&](int index, const std::function<void()>& ops) {
    be->run_recorded(this, kRecordBackward + 2 * index + (mode == GradMode::kWrite ? 1 : 0), ops);
  };
  segment(0, [&] {
    // logits now hold dlogits (written by the fused classifier in forward(); 0 in the padding
    // columns). dln over all Vp rows of the head (see forward()), dwte over its V: the tied LM
    // head stores dwte by `mode`; the encoder adds its rows to it last.
    // dwte is side work: nothing in this segment writes the dlogits or lnf it reads.
    const int Vp = acts_->logits_stride;
    be->matmul_backward(acts_->dln, nullptr, nullptr, acts_->logits, acts_->lnf,
                        working(acts_->wte_offset), N, C, Vp, WeightLayout::kOutIn, mode, Vp);
    be->side_work([&] {
      be->matmul_backward(nullptr, g + acts_->wte_offset, nullptr, acts_->logits, acts_->lnf,
                          working(acts_->wte_offset), N, C, V, WeightLayout::kOutIn, mode, Vp);
    });
    be->fill_zero(acts_->dresidual, size_t(N) * C * act);
    const void* last = L > 0 ? layers_[L - 1].residual3 : acts_->encoded;
    // dresidual is then d(residual3) of the last block: its MLP projection's bias gradient.
    float* last_fcproj_bias = L > 0 ? g + layers_[L - 1].param[kFcProjB] : nullptr;
    be->layernorm_backward(acts_->dresidual, g + acts_->ln_f_offset, g + acts_->ln_f_offset + C,
                           last_fcproj_bias, acts_->dln, last, working(acts_->ln_f_offset),
                           acts_->lnf_mean, acts_->lnf_rstd, N, C, mode);
    be->join_side_work();
  });
  if (on_ready) on_ready(acts_->ln_f_offset);
  for (int l = L - 1; l >= 0; --l) {
    segment(L - l,
            [&] { layer_backward(l, l == 0 ? acts_->encoded : layers_[l - 1].residual3, mode); });
    if (on_ready) on_ready(layers_[l].param[0]);
  }
  // encoder_backward adds into dwpe, and rows T..max_seq_len-1 get nothing: written as zeros.
  if (mode == GradMode::kWrite) {
    be->fill_zero(g + acts_->wpe_offset, size_t(config_.max_seq_len) * C * sizeof(float));
  }
  be->encoder_backward(g + acts_->wte_offset, g + acts_->wpe_offset, acts_->dresidual,
                       acts_->host_inputs.data(), B_, T_, C);
  if (on_ready) on_ready(0);
}

double flops_per_token(size_t params, int n_layer, int d_model, int T) {
  return 6.0 * static_cast<double>(params) + 12.0 * n_layer * static_cast<double>(d_model) * T;
}

}  // namespace accum::model
