// CpuBackend: kernels/backend.h on the host in fp32, delegating to kernels/cpu/ops.h.
//
// "Device" memory is host memory; every op is synchronous, so synchronize() has
// nothing to wait for. Activations are fp32, so the parameter working copy is the
// master itself and act/f32 conversions are copies.
#include "kernels/cpu/cpu_backend.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels/cpu/ops.h"

namespace accum::kernels {
namespace {

constexpr size_t kAlignment = 64;

inline float* F(void* p) { return static_cast<float*>(p); }
inline const float* F(const void* p) { return static_cast<const float*>(p); }

// Not thread-safe: one trainer thread at a time (as every Backend).
class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  DeviceKind kind() const override { return DeviceKind::kCpu; }
  size_t act_bytes() const override { return sizeof(float); }

  void* alloc(size_t bytes) override {
    const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    if (rounded < bytes) throw std::bad_alloc();  // size overflowed
    void* ptr = std::aligned_alloc(kAlignment, rounded == 0 ? kAlignment : rounded);
    if (ptr == nullptr) throw std::bad_alloc();
    std::memset(ptr, 0, rounded);
    return ptr;
  }
  void release(void* ptr) override { std::free(ptr); }
  void upload(void* dst, const void* host_src, size_t bytes) override {
    std::memcpy(dst, host_src, bytes);
  }
  void download(void* host_dst, const void* src, size_t bytes) override {
    std::memcpy(host_dst, src, bytes);
  }
  void fill_zero(void* dst, size_t bytes) override { std::memset(dst, 0, bytes); }
  void synchronize() override {}
  void copy_f32(float* dst, const float* src, size_t n) override {
    if (dst != src) std::memmove(dst, src, n * sizeof(float));
  }
  void copy_master_to_working(void* working, const float* master, size_t n) override {
    if (working != nullptr && working != master) std::memmove(working, master, n * sizeof(float));
  }
  void act_to_f32(float* dst, const void* src, size_t n) override {
    if (dst != src) std::memmove(dst, src, n * sizeof(float));
  }
  void f32_to_act(void* dst, const float* src, size_t n) override {
    if (dst != src) std::memmove(dst, src, n * sizeof(float));
  }

  void encoder_forward(void* out, const int32_t* tokens, const void* wte, const void* wpe, int B,
                       int T, int C) override {
    cpu::encoder_forward(F(out), tokens, F(wte), F(wpe), B, T, C);
  }
  void layernorm_forward(void* out, float* mean, float* rstd, const void* inp, const void* weight,
                         const void* bias, int N, int C) override {
    cpu::layernorm_forward(F(out), mean, rstd, F(inp), F(weight), F(bias), N, C);
  }
  void matmul_forward(void* out, const void* inp, const void* weight, const void* bias, int N,
                      int C, int OC, WeightLayout layout, int out_stride) override {
    cpu::matmul_forward(F(out), F(inp), F(weight), F(bias), N, C, OC, layout, out_stride);
  }
  size_t attention_saved_bytes(int B, int T, int NH) const override {
    return sizeof(float) * size_t(B) * NH * T * T;  // probabilities (B,NH,T,T)
  }
  void attention_forward(void* out, void* saved, const void* qkv, int B, int T, int C,
                         int NH) override {
    cpu::attention_forward(F(out), F(saved), F(qkv), B, T, C, NH);
  }
  void gelu_forward(void* out, const void* inp, size_t n) override {
    cpu::gelu_forward(F(out), F(inp), n);
  }
  void residual_forward(void* out, const void* a, const void* b, size_t n) override {
    cpu::residual_forward(F(out), F(a), F(b), n);
  }
  // The fused ops are their compositions here: the CPU is the oracle the CUDA fusions
  // are checked against.
  void residual_layernorm_forward(void* residual_out, void* ln_out, float* mean, float* rstd,
                                  const void* a, const void* b, const void* weight,
                                  const void* bias, int N, int C) override {
    cpu::residual_forward(F(residual_out), F(a), F(b), size_t(N) * C);
    cpu::layernorm_forward(F(ln_out), mean, rstd, F(residual_out), F(weight), F(bias), N, C);
  }
  void matmul_gelu_forward(void* out, void* pre, const void* inp, const void* weight,
                           const void* bias, int N, int C, int OC, WeightLayout layout) override {
    cpu::matmul_forward(F(pre), F(inp), F(weight), F(bias), N, C, OC, layout);
    cpu::gelu_forward(F(out), F(pre), size_t(N) * OC);
  }

  void encoder_backward(float* dwte, float* dwpe, const void* dout, const int32_t* host_tokens,
                        int B, int T, int C) override {
    cpu::encoder_backward(dwte, dwpe, F(dout), host_tokens, B, T, C);
  }
  void layernorm_backward(void* dinp, float* dweight, float* dbias, float* dinp_sum,
                          const void* dout, const void* inp, const void* weight, const float* mean,
                          const float* rstd, int N, int C, GradMode mode) override {
    cpu::layernorm_backward(F(dinp), dweight, dbias, dinp_sum, F(dout), F(inp), F(weight), mean,
                            rstd, N, C, mode);
  }
  void matmul_backward(void* dinp, float* dweight, float* dbias, const void* dout, const void* inp,
                       const void* weight, int N, int C, int OC, WeightLayout layout, GradMode mode,
                       int dout_stride) override {
    cpu::matmul_backward(F(dinp), dweight, dbias, F(dout), F(inp), F(weight), N, C, OC, layout,
                         mode, dout_stride);
  }
  void attention_backward(void* dqkv, const void* dout, const void* qkv, const void* /*out*/,
                          const void* saved, int B, int T, int C, int NH) override {
    cpu::attention_backward(F(dqkv), F(dout), F(qkv), F(saved), B, T, C, NH);
  }
  void gelu_backward(void* dinp, const void* inp, const void* dout, size_t n) override {
    cpu::gelu_backward(F(dinp), F(inp), F(dout), n);
  }
  void matmul_gelu_backward(void* dpre, float* dweight, float* dbias, const void* dout,
                            const void* inp, const void* pre, const void* weight, int N, int C,
                            int OC, WeightLayout layout, GradMode mode) override {
    cpu::matmul_backward(F(dpre), dweight, dbias, F(dout), F(inp), F(weight), N, C, OC, layout,
                         mode);
    cpu::gelu_backward_inplace(F(dpre), F(pre), size_t(N) * C);
  }

  void crossentropy_forward_backward(float* losses, void* dlogits, const void* logits,
                                     const int32_t* targets, const uint8_t* mask, float dloss,
                                     int N, int V, int stride) override {
    cpu::crossentropy_forward_backward(losses, F(dlogits), F(logits), targets, mask, dloss, N, V,
                                       stride);
  }

  void sum_add(double* acc, const float* x, size_t n) override {
    double sum = 0;
    for (size_t i = 0; i < n; ++i) sum += x[i];  // in order: the losses of one micro-batch
    *acc += sum;
  }
  double sum_squares(const float* grads, size_t n) override { return cpu::sum_squares(grads, n); }
  void adamw_update(float* master, void* working, const float* grads, float* m, float* v, size_t n,
                    const AdamWParams& params) override {
    cpu::adamw_update(master, grads, m, v, n, params);
    copy_master_to_working(working, master, n);
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace accum::kernels
