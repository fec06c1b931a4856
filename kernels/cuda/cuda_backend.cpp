// kernels/cuda/cuda_backend.cpp — the CUDA implementation of kernels/backend.h.
//
// Precision: activations and the forward's working copy of the weights are bf16;
// master weights, parameter gradients, Adam moments and statistics are fp32.
// All work is queued on one non-blocking stream owned by the back end; download(),
// sum_squares() and synchronize() wait for it, everything else is async: upload() stages
// small copies through pinned memory (HostStaging) and returns without waiting.
// Errors throw std::runtime_error naming the call and file:line (cuda_check.h);
// alloc() reports out-of-memory as std::bad_alloc so the trainer can explain it.
// Thread safety: one trainer thread per back end (as backend.h says).
#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

#include "kernels/cuda/cublaslt_loader.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_peak.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/scratch.h"

namespace accum::kernels {
namespace {

namespace cu = accum::kernels::cuda;
using cu::bf16;

inline bf16* act(void* p) { return static_cast<bf16*>(p); }
inline const bf16* act(const void* p) { return static_cast<const bf16*>(p); }

// Which end of the device's stream priorities a Stream takes: kLow is the default (CUDA's
// least priority); kHigh, the greatest, makes the block scheduler start its kernels' blocks
// before those of lower-priority streams whenever both wait for room on an SM.
enum class Priority { kLow, kHigh };

// Owns the stream; declared first in CudaBackend so it outlives everything using it.
class Stream {
 public:
  Stream(int device, Priority priority) {
    CUDA_CHECK(cudaSetDevice(device));
    int least = 0, greatest = 0;
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking,
                                            priority == Priority::kHigh ? greatest : least));
  }
  ~Stream() {
    cudaStreamSynchronize(stream_);  // destructor: nothing to report to
    cudaStreamDestroy(stream_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

// AdamW's bias corrections 1 - beta^t, computed in double on the host.
struct BiasCorrections {
  explicit BiasCorrections(const AdamWParams& p)
      : beta1(static_cast<float>(1.0 - std::pow(static_cast<double>(p.beta1), p.step))),
        beta2(static_cast<float>(1.0 - std::pow(static_cast<double>(p.beta2), p.step))) {}
  float beta1, beta2;
};

std::string device_name(int device) {
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.name;
}

// ACCUM_CUDA_GRAPHS: unset or "1" = run_recorded's sequences as CUDA graphs (the default since
// an H100 measured 2.0% off the GPT-2 124M step in alternating rounds, bench/RESULTS.md 4.14);
// "0" = ops launched one by one (bench/gpu.sh measures it against the default).
bool graphs_from_environment() {
  const char* value = std::getenv("ACCUM_CUDA_GRAPHS");
  if (value == nullptr || *value == '\0' || std::string(value) == "1") return true;
  if (std::string(value) == "0") return false;
  cu::cuda_fatal(
      "CudaBackend",
      ("ACCUM_CUDA_GRAPHS='" + std::string(value) + "': expected 1 (CUDA graphs) or 0").c_str(),
      __FILE__, __LINE__);
}

// ACCUM_CUDA_SIDE_STREAM: "1" = side_work (Backend) runs on a second stream, with its own
// cuBLASLt workspace and scratch, beside the main one: the backward's weight-gradient
// products overlap the activation-gradient chain. The main stream then takes the device's
// highest priority, so the chain's blocks go first and side work fills the SMs left idle
// (the dW products launch 96-120 blocks for an H100's 132 SMs, bench/RESULTS.md 4.20).
// "equal" = the same, both streams at the default priority (to measure what the priority
// buys). Unset or "0" = side work runs in line on the main stream (the default until a GPU
// has measured the second stream; the bits are the same in every mode).
enum class SideMode { kOff, kBelowMain, kEqual };
SideMode side_mode_from_environment() {
  const char* value = std::getenv("ACCUM_CUDA_SIDE_STREAM");
  if (value == nullptr || *value == '\0' || std::string(value) == "0") return SideMode::kOff;
  if (std::string(value) == "1") return SideMode::kBelowMain;
  if (std::string(value) == "equal") return SideMode::kEqual;
  cu::cuda_fatal("CudaBackend",
                 ("ACCUM_CUDA_SIDE_STREAM='" + std::string(value) +
                  "': expected 1 (a second stream for side work, below the main one's priority), "
                  "equal (a second stream at the same priority) or 0")
                     .c_str(),
                 __FILE__, __LINE__);
}

// The side stream's part of CudaBackend: its stream, cuBLASLt (own handle and workspace:
// two streams never share one) and scratch, and the events that order it against the main
// stream. Side work runs on it in the order it was queued.
struct SideStream {
  static constexpr int kDoneEvents = 16;  // a ring: ticket t records done[t % kDoneEvents]

  SideStream(int device, const BackendOptions& options)
      : stream(device, Priority::kLow),
        matmul(stream.get(), options.cublaslt_algorithms_dir, options.cublaslt_algorithms_source) {
    CUDA_CHECK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
    for (cudaEvent_t& event : done)
      CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  }
  ~SideStream() {
    cudaEventDestroy(fork);  // destructor: errors cannot be reported
    for (cudaEvent_t event : done) cudaEventDestroy(event);
  }
  SideStream(const SideStream&) = delete;
  SideStream& operator=(const SideStream&) = delete;

  Stream stream;
  cu::DeviceScratch scratch;
  cu::Matmul matmul;
  cudaEvent_t fork = nullptr;  // recorded on the main stream when side work is queued
  std::array<cudaEvent_t, kDoneEvents> done{};
  int64_t issued = 0;   // tickets handed out
  int64_t joined = 0;   // the main stream waits for side work up to this ticket
  bool active = false;  // inside side_work(): ops go to the side stream
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, const BackendOptions& options)
      : CudaBackend(device, options, side_mode_from_environment()) {}
  CudaBackend(int device, const BackendOptions& options, SideMode side_mode)
      : device_(device),
        stream_(device, side_mode == SideMode::kBelowMain ? Priority::kHigh : Priority::kLow),
        staging_(stream_.get()),
        matmul_(stream_.get(), options.cublaslt_algorithms_dir, options.cublaslt_algorithms_source),
        side_(side_mode != SideMode::kOff ? std::make_unique<SideStream>(device, options)
                                          : nullptr),
        graphs_(graphs_from_environment()),
        peak_tflops_(cu::peak_tflops_for(device_name(device))) {}
  ~CudaBackend() override {
    for (auto& [key, record] : records_) {
      if (record.exec != nullptr) cudaGraphExecDestroy(record.exec);  // destructor: no report
    }
  }

  // The worker's start line names it: "cuda+side-stream back end" says which path a run took.
  const char* name() const override { return side_ ? "cuda+side-stream" : "cuda"; }
  double peak_tflops() const override { return peak_tflops_; }
  std::string kept_algorithms_file() const override { return matmul_.algorithms_file(); }
  bool memory_info(size_t* used_bytes, size_t* total_bytes) const override {
    return cuda_memory_info(device_, used_bytes, total_bytes);
  }
  void* compute_stream() override { return stream_.get(); }
  DeviceKind kind() const override { return DeviceKind::kCuda; }
  size_t act_bytes() const override { return sizeof(bf16); }

  // ---- memory ----
  void* alloc(size_t bytes) override {
    if (bytes == 0) return nullptr;
    void* ptr = nullptr;
    const cudaError_t err = cudaMalloc(&ptr, bytes);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear the sticky-free error so later calls work
      throw std::bad_alloc();
    }
    CUDA_CHECK(err);
    CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, s()));
    return ptr;
  }
  void release(void* ptr) override {
    if (ptr == nullptr) return;
    join_side_work();
    CUDA_CHECK(cudaStreamSynchronize(s()));  // queued work may still read `ptr`
    CUDA_CHECK(cudaFree(ptr));
  }
  void upload(void* dst, const void* host_src, size_t bytes) override {
    staging().copy_to_device(dst, host_src, bytes);
  }
  void download(void* host_dst, const void* src, size_t bytes) override {
    join_side_work();
    CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, s()));
    CUDA_CHECK(cudaStreamSynchronize(s()));
  }
  void fill_zero(void* dst, size_t bytes) override {
    CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, s()));
  }
  void synchronize() override {
    join_side_work();
    CUDA_CHECK(cudaStreamSynchronize(s()));
  }
  void copy_f32(float* dst, const float* src, size_t n) override {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, s()));
  }
  void copy_master_to_working(void* working, const float* master, size_t n) override {
    cu::f32_to_bf16(act(working), master, n, s());
  }
  void act_to_f32(float* dst, const void* src, size_t n) override {
    cu::bf16_to_f32(dst, act(src), n, s());
  }
  void f32_to_act(void* dst, const float* src, size_t n) override {
    cu::f32_to_bf16(act(dst), src, n, s());
  }

  // ---- forward ----
  void encoder_forward(void* out, const int32_t* tokens, const void* wte, const void* wpe, int B,
                       int T, int C) override {
    cu::encoder_forward(act(out), tokens, act(wte), act(wpe), B, T, C, s());
  }
  void layernorm_forward(void* out, float* mean, float* rstd, const void* inp, const void* weight,
                         const void* bias, int N, int C) override {
    cu::layernorm_forward(act(out), mean, rstd, act(inp), act(weight), act(bias), N, C, s());
  }
  void matmul_forward(void* out, const void* inp, const void* weight, const void* bias, int N,
                      int C, int OC, WeightLayout layout, int out_stride) override {
    mm().forward(act(out), act(inp), act(weight), act(bias), N, C, OC, layout,
                 resolve_row_stride(out_stride, OC, "matmul_forward"));
  }
  int row_stride(int columns) const override {
    constexpr int kRowAlignment = 64;  // elements: 128 bytes of bf16
    return (columns + kRowAlignment - 1) / kRowAlignment * kRowAlignment;
  }
  size_t attention_saved_bytes(int B, int T, int NH) const override {
    return sizeof(float) * static_cast<size_t>(B) * NH * T;  // log-sum-exp per query row
  }
  size_t scratch_bytes(size_t rows, int C, int NH, int V) const override {
    return cu::scratch_bound(rows, C, NH, V) +
           (side_ ? cu::scratch_bound(rows, C, NH, V, /*side_work_only=*/true) : 0);
  }
  void attention_forward(void* out, void* saved, const void* qkv, int B, int T, int C,
                         int NH) override {
    cu::attention_forward(act(out), static_cast<float*>(saved), act(qkv), B, T, C, NH, s());
  }
  void gelu_forward(void* out, const void* inp, size_t n) override {
    cu::gelu_forward(act(out), act(inp), n, s());
  }
  void residual_forward(void* out, const void* a, const void* b, size_t n) override {
    cu::residual_forward(act(out), act(a), act(b), n, s());
  }
  void residual_layernorm_forward(void* residual_out, void* ln_out, float* mean, float* rstd,
                                  const void* a, const void* b, const void* weight,
                                  const void* bias, int N, int C) override {
    cu::residual_layernorm_forward(act(residual_out), act(ln_out), mean, rstd, act(a), act(b),
                                   act(weight), act(bias), N, C, s());
  }
  void matmul_gelu_forward(void* out, void* pre, const void* inp, const void* weight,
                           const void* bias, int N, int C, int OC, WeightLayout layout) override {
    mm().forward_gelu(act(out), act(pre), act(inp), act(weight), act(bias), N, C, OC, layout);
  }

  // ---- backward ----
  void encoder_backward(float* dwte, float* dwpe, const void* dout, const int32_t* host_tokens,
                        int B, int T, int C) override {
    cu::encoder_backward(dwte, dwpe, act(dout), host_tokens, B, T, C, scr(), staging(), s());
  }
  void layernorm_backward(void* dinp, float* dweight, float* dbias, float* dinp_sum,
                          const void* dout, const void* inp, const void* weight, const float* mean,
                          const float* rstd, int N, int C, GradMode mode) override {
    cu::layernorm_backward(act(dinp), dweight, dbias, dinp_sum, act(dout), act(inp), act(weight),
                           mean, rstd, N, C, mode, scr(), s());
  }
  void matmul_backward(void* dinp, float* dweight, float* dbias, const void* dout, const void* inp,
                       const void* weight, int N, int C, int OC, WeightLayout layout, GradMode mode,
                       int dout_stride) override {
    mm().backward(act(dinp), dweight, dbias, act(dout), act(inp), act(weight), N, C, OC, layout,
                  mode, resolve_row_stride(dout_stride, OC, "matmul_backward"), scr());
  }
  void attention_backward(void* dqkv, const void* dout, const void* qkv, const void* out,
                          const void* saved, int B, int T, int C, int NH) override {
    cu::attention_backward(act(dqkv), act(dout), act(qkv), act(out),
                           static_cast<const float*>(saved), B, T, C, NH, scr(), s());
  }
  void gelu_backward(void* dinp, const void* inp, const void* dout, size_t n) override {
    cu::gelu_backward(act(dinp), act(inp), act(dout), n, s());
  }
  void matmul_gelu_backward(void* dpre, float* dweight, float* dbias, const void* dout,
                            const void* inp, const void* pre, const void* weight, int N, int C,
                            int OC, WeightLayout layout, GradMode mode) override {
    mm().backward_gelu(act(dpre), dweight, dbias, act(dout), act(inp), act(pre), act(weight), N, C,
                       OC, layout, mode, scr());
  }

  // ---- loss ----
  void crossentropy_forward_backward(float* losses, void* dlogits, const void* logits,
                                     const int32_t* targets, const uint8_t* mask, float dloss,
                                     int N, int V, int stride) override {
    cu::crossentropy_forward_backward(
        losses, act(dlogits), act(logits), targets, mask, dloss, N, V,
        resolve_row_stride(stride, V, "crossentropy_forward_backward"), s());
  }

  // ---- recorded op sequences ----
  // The first call runs the body (plans, scratch sizes and other lazy state settle, and the
  // scratch slots it uses are noted); the second captures it into a graph on the stream,
  // instantiates and launches it; later calls launch it. A record is dropped and redone when
  // a scratch slot it uses has moved (grown) since.
  void run_recorded(const void* owner, int key, const std::function<void()>& body) override {
    if (!graphs_) {
      body();
      join_side_work();
      return;
    }
    Record& record = records_[{owner, key}];
    if (record.warm && record.scratch_moves != scratch_moves(record.slots)) {
      if (record.exec != nullptr) CUDA_CHECK(cudaGraphExecDestroy(record.exec));
      record = Record{};
    }
    if (!record.warm) {
      scratch_.watch();
      if (side_) side_->scratch.watch();
      body();
      join_side_work();
      record.warm = true;
      record.slots = scratch_.touched() | (side_ ? side_->scratch.touched() << kSideSlotShift : 0);
      record.scratch_moves = scratch_moves(record.slots);
      return;
    }
    if (record.exec == nullptr) {
      // A capture may not wait for work queued before it (a GPU refuses a dependency across
      // the capture's edge): side work from before is joined first, outside the capture.
      join_side_work();
      CUDA_CHECK(cudaStreamBeginCapture(s(), cudaStreamCaptureModeThreadLocal));
      cudaGraph_t graph = nullptr;
      try {
        body();
        join_side_work();  // a capture ends with every stream it forked joined back
      } catch (...) {
        if (cudaStreamEndCapture(s(), &graph) == cudaSuccess && graph != nullptr) {
          cudaGraphDestroy(graph);
        }
        (void)cudaGetLastError();
        // The captured side work never runs, and its events may not be waited for outside
        // the capture: nothing is left to join.
        if (side_) side_->joined = side_->issued;
        throw;
      }
      CUDA_CHECK(cudaStreamEndCapture(s(), &graph));
      const cudaError_t instantiated = cudaGraphInstantiate(&record.exec, graph, 0);
      CUDA_CHECK(cudaGraphDestroy(graph));
      CUDA_CHECK(instantiated);
    }
    CUDA_CHECK(cudaGraphLaunch(record.exec, s()));
    ++launches_;
  }
  // ---- side work (kernels/backend.h): a fork from the main stream to the side stream, the
  // ops with s(), mm() and scr() pointing at the side stream's, then an event per ticket that
  // joins wait for. Inside a capture these become the graph's edges.
  int64_t side_work(const std::function<void()>& ops) override {
    if (!side_) return Backend::side_work(ops);
    if (side_->active) throw std::logic_error("side_work: called inside side work");
    CUDA_CHECK(cudaEventRecord(side_->fork, stream_.get()));
    CUDA_CHECK(cudaStreamWaitEvent(side_->stream.get(), side_->fork, 0));
    side_->active = true;
    // Whatever `ops` queued, also when it throws partway, gets a ticket: later joins (and
    // synchronize(), release()) then wait for it.
    auto issue = [&] {
      side_->active = false;
      const int64_t ticket = ++side_->issued;
      CUDA_CHECK(
          cudaEventRecord(side_->done[ticket % SideStream::kDoneEvents], side_->stream.get()));
      return ticket;
    };
    try {
      ops();
    } catch (...) {
      (void)issue();
      throw;
    }
    return issue();
  }
  // A ticket whose event was re-recorded by a later ticket (the ring wrapped) waits for that
  // later side work too: stricter, never wrong, since side work runs in order.
  void join_side_work(int64_t ticket) override {
    if (!side_ || ticket <= side_->joined) return;
    if (side_->active) throw std::logic_error("join_side_work: called inside side work");
    if (ticket > side_->issued) {
      throw std::logic_error("join_side_work: ticket " + std::to_string(ticket) +
                             " was never handed out (last: " + std::to_string(side_->issued) + ")");
    }
    CUDA_CHECK(
        cudaStreamWaitEvent(stream_.get(), side_->done[ticket % SideStream::kDoneEvents], 0));
    side_->joined = ticket;
  }
  void join_side_work() override {
    if (side_) join_side_work(side_->issued);
  }

  void forget_recorded(const void* owner) override {
    for (auto it = records_.begin(); it != records_.end();) {
      if (it->first.first != owner) {
        ++it;
        continue;
      }
      if (it->second.exec != nullptr) CUDA_CHECK(cudaGraphExecDestroy(it->second.exec));
      it = records_.erase(it);
    }
  }
  long recorded_launches() const override { return launches_; }

  // ---- optimizer ----
  void sum_add(double* acc, const float* x, size_t n) override { cu::sum_add(acc, x, n, s()); }
  double sum_squares(const float* grads, size_t n) override {
    join_side_work();
    return cu::sum_squares(grads, n, scr(), s());
  }
  void adamw_update(float* master, void* working, const float* grads, float* m, float* v, size_t n,
                    const AdamWParams& p) override {
    const BiasCorrections c(p);
    cu::adamw_update(master, act(working), grads, m, v, n, p.lr, p.beta1, p.beta2, p.eps,
                     p.weight_decay, p.grad_scale, c.beta1, c.beta2, s());
  }
  void adamw_update_segments(float* master, void* working, const float* grads, float* m, float* v,
                             const std::vector<AdamWSegment>& segments,
                             const AdamWParams& p) override {
    const BiasCorrections c(p);
    cu::adamw_update_pieces(master, act(working), grads, m, v, segments, p.lr, p.beta1, p.beta2,
                            p.eps, p.weight_decay, p.grad_scale, c.beta1, c.beta2, scr(), staging(),
                            s());
  }

 private:
  int device_;
  // The stream, cuBLASLt and scratch an op uses: the side stream's inside side_work().
  cudaStream_t s() const { return side_ && side_->active ? side_->stream.get() : stream_.get(); }
  cu::Matmul& mm() { return side_ && side_->active ? side_->matmul : matmul_; }
  cu::DeviceScratch& scr() { return side_ && side_->active ? side_->scratch : scratch_; }
  // Host staging belongs to the main stream: side work does not upload.
  cu::HostStaging& staging() {
    if (side_ && side_->active) throw std::logic_error("side work may not copy from the host");
    return staging_;
  }

  Stream stream_;
  cu::DeviceScratch scratch_;
  cu::HostStaging staging_;
  cu::Matmul matmul_;
  std::unique_ptr<SideStream> side_;         // null unless ACCUM_CUDA_SIDE_STREAM=1
  static constexpr int kSideSlotShift = 16;  // Record::slots: the side scratch's bits
  static_assert(static_cast<int>(cu::ScratchSlot::kCount) <= kSideSlotShift);
  struct Record {
    bool warm = false;               // the body ran once without recording
    uint32_t slots = 0;              // the scratch slots the body uses (a bit per slot)
    uint64_t scratch_moves = 0;      // how often those slots had moved when it ran
    cudaGraphExec_t exec = nullptr;  // the record, once captured
  };
  // The moves of the slots in `slots`, summed: changes when any of them moves.
  uint64_t scratch_moves(uint32_t slots) const {
    uint64_t total = 0;
    for (int i = 0; i < static_cast<int>(cu::ScratchSlot::kCount); ++i) {
      const auto slot = static_cast<cu::ScratchSlot>(i);
      if (slots & (1u << i)) total += scratch_.moves(slot);
      if (side_ && (slots & (1u << (i + kSideSlotShift)))) total += side_->scratch.moves(slot);
    }
    return total;
  }
  bool graphs_;
  double peak_tflops_;
  std::map<std::pair<const void*, int>, Record> records_;
  long launches_ = 0;
};

}  // namespace

bool cuda_device_available(std::string* why) {
  std::string library_error;
  if (!cu::load_cublaslt(&library_error)) {
    if (why) *why = library_error;
    return false;
  }
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    if (why)
      *why = std::string("no CUDA device visible (cudaGetDeviceCount: ") + cudaGetErrorString(err) +
             ")";
    return false;
  }
  if (count == 0) {
    if (why) *why = "no CUDA device visible (cudaGetDeviceCount returned 0)";
    return false;
  }
  return true;
}

bool cuda_memory_info(int local_rank, size_t* used_bytes, size_t* total_bytes) {
  int count = 0, previous = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count <= 0) {
    (void)cudaGetLastError();
    return false;
  }
  size_t free_bytes = 0, total = 0;
  CUDA_CHECK(cudaGetDevice(&previous));
  CUDA_CHECK(cudaSetDevice((local_rank < 0 ? 0 : local_rank) % count));
  const cudaError_t err = cudaMemGetInfo(&free_bytes, &total);
  CUDA_CHECK(cudaSetDevice(previous));
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // or the next CUDA_CHECK_LAUNCH would report it as its own
    return false;
  }
  if (used_bytes) *used_bytes = total - free_bytes;
  if (total_bytes) *total_bytes = total;
  return true;
}

std::unique_ptr<Backend> make_cuda_backend(int local_rank, const BackendOptions& options) {
  cu::require_cublaslt();
  int count = 0;
  CUDA_CHECK(cudaGetDeviceCount(&count));
  if (count <= 0) {
    cu::cuda_fatal("make_cuda_backend", "no CUDA device visible", __FILE__, __LINE__);
  }
  const int device = (local_rank < 0 ? 0 : local_rank) % count;
  return std::make_unique<CudaBackend>(device, options);
}

}  // namespace accum::kernels
