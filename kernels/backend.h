// kernels/backend.h — the one narrow op interface every compute back end implements.
//
// The GPT-2 model (daemon/worker/model) is written once against this interface;
// the back end is chosen from the job spec (`device`) through make_backend().
//
// Conventions every back end keeps (the CPU back end is the oracle of the others):
//  * Pointers are device pointers obtained from alloc(); `act` buffers hold
//    activation elements of act_bytes() each (fp32 on the CPU, bf16 on CUDA).
//  * Parameters live as an fp32 master copy. Forward ops read the working copy
//    (`const void* weight`, act dtype): on the CPU that is the master itself,
//    on CUDA a bf16 copy refreshed by adamw_update / copy_master_to_working.
//  * Parameter gradients are fp32 (`float*`). Statistics (mean, rstd, losses) are fp32.
//  * Backward ops store PARAMETER gradients as the caller's GradMode says: kAdd (`+=`), so
//    K micro-batches accumulate with no copies, or kWrite (`=`) for a window's first
//    micro-batch, so the buffer needs no zeroing and the GEMMs no read of zeros.
//    encoder_backward always adds (dwte is the LM head's gradient too; see the op).
//    ACTIVATION gradients are WRITTEN (the caller's scratch, used once, needs no
//    zeroing) with one exception: layernorm_backward ADDS into dinp, the residual
//    stream's gradient, which sums the skip path and the LayerNorm branch.
//  * Shapes: B batch, T time, C channels, NH heads, V vocab, N = B*T rows.
//  * Ops are asynchronous with respect to the host where the device allows;
//    synchronize() waits. Errors in a back end are fatal and name file:line.
//
// Thread safety: a Backend is used by one thread (the trainer's) at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace accum::kernels {

enum class DeviceKind { kCpu, kCuda };

// Layout of a linear layer's weight. Hugging Face GPT-2 Conv1D weights are
// (C, OC) "in-out"; the LM head tied to the token embedding is (V, C) "out-in".
enum class WeightLayout { kInOut, kOutIn };

// How a backward op stores a PARAMETER gradient: kWrite replaces what the buffer holds (the
// first micro-batch of a window), kAdd adds to it (the others).
enum class GradMode { kWrite, kAdd };

// The row stride an op uses: `stride`, or `columns` for 0 (packed rows). A stride shorter than
// a row is refused: std::invalid_argument naming `op`.
inline int resolve_row_stride(int stride, int columns, const char* op) {
  if (stride == 0) return columns;
  if (stride < columns) {
    throw std::invalid_argument(std::string(op) + ": row stride " + std::to_string(stride) +
                                " is shorter than a row of " + std::to_string(columns) +
                                " columns (expected 0 or >= " + std::to_string(columns) + ")");
  }
  return stride;
}

struct AdamWParams {
  float lr = 0;
  // Double, as torch.optim keeps them (Python floats): 1 - beta and the bias corrections
  // 1 - beta^t are taken before any rounding to fp32, which would make a beta2 of
  // 0.99999999 exactly 1 (no second moment, bias correction 0: NaN weights) and give
  // 0.999's 1 - beta2 a 1.3e-5 relative error.
  double beta1 = 0.9;
  double beta2 = 0.95;
  float eps = 1e-8f;
  float weight_decay = 0;  // decoupled: p -= lr * wd * p
  float grad_scale = 1;    // g = grads * grad_scale (loss normalization x clipping)
  int step = 1;            // 1-based optimizer step t for bias correction
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual DeviceKind kind() const = 0;
  // Bytes of one activation element: 4 (fp32) or 2 (bf16).
  virtual size_t act_bytes() const = 0;
  // True when parameters need a separate working copy (act dtype != fp32).
  bool has_working_copy() const { return act_bytes() != sizeof(float); }

  // The most temporary device memory the back end's ops borrow in one micro-step of
  // `rows` = B*T tokens (on top of the model's own buffers): part of the memory arithmetic.
  virtual size_t scratch_bytes(size_t rows, int C, int NH, int V) const {
    (void)rows, (void)C, (void)NH, (void)V;
    return 0;
  }

  // How many elements apart this back end wants the rows of a wide (rows, columns) activation
  // (the logits, columns = the vocabulary): `columns`, or more where the ops run faster on
  // aligned rows (CUDA: a multiple of 64, 128 bytes, so an odd vocabulary such as GPT-2's
  // 50257 keeps cuBLASLt's aligned kernels and the classifier's 16-byte accesses). The model
  // allocates rows this far apart and passes it as the ops' stride.
  virtual int row_stride(int columns) const { return columns; }

  // ---- memory ------------------------------------------------------------
  // Returns zero-filled device memory; throws std::bad_alloc when out of memory.
  virtual void* alloc(size_t bytes) = 0;
  virtual void release(void* ptr) = 0;
  // upload() may return before the copy lands (later ops see it); host_src may be reused
  // as soon as it returns. download() returns with the data in host_dst.
  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void fill_zero(void* dst, size_t bytes) = 0;
  virtual void synchronize() = 0;
  // Copies n fp32 values between device buffers (both fp32).
  virtual void copy_f32(float* dst, const float* src, size_t n) = 0;
  // working(n, act dtype) = master(n, fp32). No-op target on fp32 back ends is allowed
  // (working == master); the model only calls it when has_working_copy().
  virtual void copy_master_to_working(void* working, const float* master, size_t n) = 0;
  // Converts n act-dtype values to fp32 (for losses/logits read-back and tests).
  virtual void act_to_f32(float* dst, const void* src, size_t n) = 0;
  virtual void f32_to_act(void* dst, const float* src, size_t n) = 0;
  // The device's dense peak for this back end's matmul precision, TFLOP/s; 0 when unknown
  // (the CPU back end; a GPU not in the CUDA back end's table).
  virtual double peak_tflops() const { return 0.0; }
  // The file cuBLASLt's kept algorithm choices are read from and added to (BackendOptions,
  // or ACCUM_CUBLASLT_ALGOS, which wins), "" when there is none (the CPU back end).
  virtual std::string kept_algorithms_file() const { return {}; }
  // Device memory in use and in total (false when the back end cannot tell; the CPU
  // back end leaves host memory to the caller).
  virtual bool memory_info(size_t* used_bytes, size_t* total_bytes) const {
    (void)used_bytes;
    (void)total_bytes;
    return false;
  }
  // The stream ops run on (cudaStream_t on CUDA, null elsewhere): the communicator
  // orders its collectives after it.
  virtual void* compute_stream() { return nullptr; }

  // ---- recorded op sequences (CUDA graphs) ---------------------------------
  // Runs `body`: ops of this back end that take the same arguments at every call with the
  // same (owner, key) and no host work in between. A back end may record them once and
  // from then on launch the record, all ops at once (CUDA: a CUDA graph, captured at the
  // second call after an ordinary first one; ACCUM_CUDA_GRAPHS=0 turns it off). The default runs
  // it.
  virtual void run_recorded(const void* owner, int key, const std::function<void()>& body) {
    (void)owner;
    (void)key;
    body();
  }
  // Drops the records of `owner` (before the buffers they use are released).
  virtual void forget_recorded(const void* owner) { (void)owner; }

  // ---- work beside the main sequence (CUDA: a second stream) -----------------
  // side_work(ops) queues `ops` so that they may run concurrently with the ops queued after
  // it, until a join: join_side_work(ticket) orders everything queued after the join behind
  // the side work up to that ticket (side work runs in the order it was queued), and
  // join_side_work() behind all of it. The caller promises that between side_work and the
  // join, no op reads what `ops` write or writes what they read (the model's weight-gradient
  // products beside the activation-gradient chain, Gpt2::layer_backward). Side work must be
  // joined before a run_recorded body ends; synchronize(), download() and sum_squares() join
  // it first. Bits do not depend on it: the same ops run, in another interleaving. The default
  // runs `ops` at once (the CPU back end; CUDA with ACCUM_CUDA_SIDE_STREAM=0).
  virtual int64_t side_work(const std::function<void()>& ops) {
    ops();
    return 0;
  }
  virtual void join_side_work(int64_t ticket) { (void)ticket; }
  virtual void join_side_work() {}
  // How many times run_recorded launched a record instead of running its body.
  virtual long recorded_launches() const { return 0; }

  // ---- ops (forward) -----------------------------------------------------
  // out(B,T,C) = wte[tokens[b,t], :] + wpe[t, :]
  virtual void encoder_forward(void* out, const int32_t* tokens, const void* wte, const void* wpe,
                               int B, int T, int C) = 0;
  // out(N,C) = (inp - mean) * rstd * weight + bias; mean, rstd (N) saved; eps 1e-5
  virtual void layernorm_forward(void* out, float* mean, float* rstd, const void* inp,
                                 const void* weight, const void* bias, int N, int C) = 0;
  // out(N,OC) = inp(N,C) @ W + bias, W (C,OC) for kInOut or W^T with W (OC,C) for kOutIn.
  // bias may be null. out_stride: elements from one row of out to the next (>= OC; 0: OC).
  // Only the OC columns of each row are written (see row_stride()).
  // (Overrides take out_stride without a default: calls go through Backend.)
  virtual void matmul_forward(void* out, const void* inp, const void* weight, const void* bias,
                              int N, int C, int OC, WeightLayout layout, int out_stride = 0) = 0;
  // Causal multi-head attention. qkv(B,T,3C) = [q | k | v], head h uses channels
  // h*hs..(h+1)*hs with hs = C/NH; out(B,T,C). `saved` holds what the backward
  // needs (attention_saved_bytes of it; the CPU keeps probabilities, CUDA keeps
  // log-sum-exp only). Scale 1/sqrt(hs).
  virtual size_t attention_saved_bytes(int B, int T, int NH) const = 0;
  virtual void attention_forward(void* out, void* saved, const void* qkv, int B, int T, int C,
                                 int NH) = 0;
  // out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  virtual void gelu_forward(void* out, const void* inp, size_t n) = 0;
  // out = a + b
  virtual void residual_forward(void* out, const void* a, const void* b, size_t n) = 0;

  // ---- fused forward ops (each equals the composition named; CUDA fuses them) ----
  // residual_out(N,C) = a + b, then layernorm_forward(ln_out, mean, rstd, residual_out, ...)
  // on the STORED residual (rounded to the act dtype), exactly as the two ops in a row.
  virtual void residual_layernorm_forward(void* residual_out, void* ln_out, float* mean,
                                          float* rstd, const void* a, const void* b,
                                          const void* weight, const void* bias, int N, int C) = 0;
  // pre(N,OC) = inp @ W + bias (as matmul_forward); out(N,OC) = gelu(pre). Both are stored:
  // the backward needs pre. (CUDA: cuBLASLt's GELU_AUX epilogue, gelu of the fp32 sum.)
  virtual void matmul_gelu_forward(void* out, void* pre, const void* inp, const void* weight,
                                   const void* bias, int N, int C, int OC, WeightLayout layout) = 0;

  // ---- ops (backward: parameter gradients by GradMode, activation gradients written) ----
  // dwte[tokens[b,t]] += dout[b,t]; dwpe[t] += dout[b,t], always added: the tied LM head
  // writes dwte earlier in the same backward. host_tokens(B*T) are in HOST
  // memory: back ends bucket positions by token on the host, so every dwte row sums its
  // positions in order (deterministic, no atomics) without a device->host copy.
  virtual void encoder_backward(float* dwte, float* dwpe, const void* dout,
                                const int32_t* host_tokens, int B, int T, int C) = 0;
  // dinp(N,C) += d/dinp of LayerNorm: ADDED (the residual stream); dweight, dbias by `mode`.
  // dinp_sum(C) (may be null), by `mode`: sum_rows of dinp AFTER the add. dinp is then the
  // gradient of the residual stream, so this is the bias gradient of the linear layer whose
  // output was added into it (GPT-2's attention and MLP projections), summed here from values
  // the op holds anyway instead of in another pass over dinp.
  virtual void layernorm_backward(void* dinp, float* dweight, float* dbias, float* dinp_sum,
                                  const void* dout, const void* inp, const void* weight,
                                  const float* mean, const float* rstd, int N, int C,
                                  GradMode mode) = 0;
  // dinp = dout @ W^T (written; may be null); by `mode`, dweight (+)= (kInOut) inp^T @ dout |
  // (kOutIn) dout^T @ inp; dbias (+)= sum_rows dout (dbias may be null). dout_stride: elements
  // from one row of dout to the next (>= OC; 0: OC); only its OC columns are read.
  virtual void matmul_backward(void* dinp, float* dweight, float* dbias, const void* dout,
                               const void* inp, const void* weight, int N, int C, int OC,
                               WeightLayout layout, GradMode mode, int dout_stride = 0) = 0;
  // dqkv(B,T,3C) = d/dqkv of <dout, out> (written, every element).
  virtual void attention_backward(void* dqkv, const void* dout, const void* qkv, const void* out,
                                  const void* saved, int B, int T, int C, int NH) = 0;
  // dinp = gelu'(inp) * dout (written).
  virtual void gelu_backward(void* dinp, const void* inp, const void* dout, size_t n) = 0;
  // Backward of out(N,OC) = gelu(pre)(N,C) @ W + bias through the linear layer AND the GELU
  // before it (inp = gelu(pre) as stored by matmul_gelu_forward):
  //   dweight, dbias as matmul_backward with inp (by `mode`)
  //   dpre = (dout @ W^T) * gelu'(pre)       written (CUDA: cuBLASLt's DGELU epilogue)
  virtual void matmul_gelu_backward(void* dpre, float* dweight, float* dbias, const void* dout,
                                    const void* inp, const void* pre, const void* weight, int N,
                                    int C, int OC, WeightLayout layout, GradMode mode) = 0;

  // ---- loss ----------------------------------------------------------------
  // Fused softmax + cross-entropy over logits(N,V) with targets(N) and an optional
  // per-target mask(N) (0 = not counted; null = all counted).
  //   losses[i] = mask_i ? -log softmax(logits_i)[targets_i] : 0          (fp32)
  //   if dlogits != null: dlogits[i] = mask_i ? dloss * (softmax(logits_i) - onehot) : 0
  //   (written, not added: logits are recomputed every micro-batch; dlogits may alias logits)
  // stride: elements from one row of logits (and dlogits) to the next (>= V; 0: V). Only the
  // V columns of a row are read; with dlogits, its padding columns V..stride are written 0.
  virtual void crossentropy_forward_backward(float* losses, void* dlogits, const void* logits,
                                             const int32_t* targets, const uint8_t* mask,
                                             float dloss, int N, int V, int stride = 0) = 0;
  // *acc += sum_i x[i], in double and in a fixed order; acc is one double from alloc().
  // The model sums each micro-batch's losses on the device and reads them once per step.
  virtual void sum_add(double* acc, const float* x, size_t n) = 0;

  // ---- optimizer -------------------------------------------------------------
  // Sum of squares of n fp32 gradients, in a fixed (reproducible) order.
  virtual double sum_squares(const float* grads, size_t n) = 0;
  // PyTorch AdamW on n values (decoupled decay, bias-corrected):
  //   g = grads*grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2
  //   p -= lr * (wd * p + (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps))
  // and working (if non-null) = act(p).
  virtual void adamw_update(float* master, void* working, const float* grads, float* m, float* v,
                            size_t n, const AdamWParams& params) = 0;
  // The same update on many pieces of the flat buffers at once (an optimizer step over every
  // tensor): piece s covers values [offset, offset + count) of master/working/grads and
  // [moment_offset, moment_offset + count) of m/v, with params.weight_decay where s.decay
  // and 0 elsewhere. Bit-identical to one adamw_update per piece, which is what this
  // default does; the CUDA back end updates every piece in one launch.
  struct AdamWSegment {
    size_t offset, count, moment_offset;
    bool decay;
    bool operator==(const AdamWSegment& o) const {
      return offset == o.offset && count == o.count && moment_offset == o.moment_offset &&
             decay == o.decay;
    }
  };
  virtual void adamw_update_segments(float* master, void* working, const float* grads, float* m,
                                     float* v, const std::vector<AdamWSegment>& segments,
                                     const AdamWParams& params) {
    AdamWParams piece_params = params;
    for (const AdamWSegment& s : segments) {
      piece_params.weight_decay = s.decay ? params.weight_decay : 0.0f;
      void* piece_working =
          working ? static_cast<char*>(working) + s.offset * act_bytes() : nullptr;
      adamw_update(master + s.offset, piece_working, grads + s.offset, m + s.moment_offset,
                   v + s.moment_offset, s.count, piece_params);
    }
  }
};

// What a job spec chooses about its back end beyond the device (the CPU back end has no
// such choices).
struct BackendOptions {
  // CUDA: the folder where cuBLASLt's timed algorithm choices are kept and reused, one file
  // per GPU model and cuBLASLt version (kernels/cuda/matmul_algos.h), "" for none.
  // ACCUM_CUBLASLT_ALGOS, when set, names the file instead.
  std::string cublaslt_algorithms_dir;
  // What chose the folder, for error messages (the spec field).
  std::string cublaslt_algorithms_source = "cublaslt_algorithms_dir";
};

// Creates the back end for `kind` (CUDA: device `local_rank` of this node).
// Throws std::runtime_error naming the back end when it is not built or no device exists.
std::unique_ptr<Backend> make_backend(DeviceKind kind, int local_rank = 0,
                                      const BackendOptions& options = {});
// Whether make_backend(kind) can succeed on this build and machine; `why` says why not.
bool backend_available(DeviceKind kind, std::string* why);

}  // namespace accum::kernels
