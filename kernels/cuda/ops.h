// kernels/cuda/ops.h — host launchers of the CUDA ops, one .cu file per op with the same
// name as its CPU twin (kernels/cpu/<op>.cpp) and the formula/shapes in its header comment.
// Every launcher is asynchronous on `stream` and checks its launch (file:line).
// Layout and precision rules are those of kernels/backend.h: activations bf16,
// parameter gradients / statistics / optimizer state fp32; backward ops add into parameter
// gradients and write activation gradients (layernorm_backward's dinp adds).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda/scratch.h"

namespace accum::kernels::cuda {

using bf16 = __nv_bfloat16;

// ---- encoder.cu ----
void encoder_forward(bf16* out, const int32_t* tokens, const bf16* wte, const bf16* wpe, int B,
                     int T, int C, cudaStream_t stream);
// host_tokens in host memory: bucketed on the host (deterministic dwte sums), no waiting.
void encoder_backward(float* dwte, float* dwpe, const bf16* dout, const int32_t* host_tokens, int B,
                      int T, int C, DeviceScratch& scratch, HostStaging& staging,
                      cudaStream_t stream);

// ---- layernorm.cu ----
void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp, const bf16* weight,
                       const bf16* bias, int N, int C, cudaStream_t stream);
// residual_out = a + b (rounded to bf16), then LayerNorm of the rounded residual: one pass.
void residual_layernorm_forward(bf16* residual_out, bf16* ln_out, float* mean, float* rstd,
                                const bf16* a, const bf16* b, const bf16* weight, const bf16* bias,
                                int N, int C, cudaStream_t stream);
// dinp_sum (may be null): sum_rows of dinp after the add, by `mode` (kernels/backend.h).
void layernorm_backward(bf16* dinp, float* dweight, float* dbias, float* dinp_sum, const bf16* dout,
                        const bf16* inp, const bf16* weight, const float* mean, const float* rstd,
                        int N, int C, GradMode mode, DeviceScratch& scratch, cudaStream_t stream);

// ---- column_sum.cu ---- out[c] (+)= sum_rows in[r, c] by `mode`, deterministic two-stage
// reduction over rows `ld` (>= cols) elements apart; add_f32: dst[i] += src[i].
void add_f32(float* dst, const float* src, size_t n, cudaStream_t stream);
void column_sum(float* out, const bf16* in, int rows, int cols, int ld, GradMode mode,
                DeviceScratch& scratch, cudaStream_t stream);

// ---- attention.cu ---- saved = lse (B, NH, T) fp32.
void attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                       cudaStream_t stream);
void attention_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out,
                        const float* lse, int B, int T, int C, int NH, DeviceScratch& scratch,
                        cudaStream_t stream);

// ---- gelu.cu / residual.cu ----
void gelu_forward(bf16* out, const bf16* inp, size_t n, cudaStream_t stream);
void gelu_backward(bf16* dinp, const bf16* inp, const bf16* dout, size_t n, cudaStream_t stream);
void gelu_backward_inplace(bf16* d, const bf16* pre, size_t n, cudaStream_t stream);
void residual_forward(bf16* out, const bf16* a, const bf16* b, size_t n, cudaStream_t stream);

// ---- classifier.cu ----
// Rows of logits and dlogits are ld (>= V) elements apart.
void crossentropy_forward_backward(float* losses, bf16* dlogits, const bf16* logits,
                                   const int32_t* targets, const uint8_t* mask, float dloss, int N,
                                   int V, int ld, cudaStream_t stream);

// ---- adamw.cu ---- bias corrections computed by the caller in double; the betas in double,
// as AdamWParams holds them (1 - beta is taken before rounding).
void adamw_update(float* master, bf16* working, const float* grads, float* m, float* v, size_t n,
                  float lr, double beta1, double beta2, float eps, float weight_decay,
                  float grad_scale, float beta1_correction, float beta2_correction,
                  cudaStream_t stream);

// Every piece of a model in one launch; the same values as one adamw_update per piece with
// weight_decay where piece.decay and 0 elsewhere (kernels::Backend::adamw_update_segments).
using AdamWPiece = Backend::AdamWSegment;  // offset, count, moment_offset, decay
void adamw_update_pieces(float* master, bf16* working, const float* grads, float* m, float* v,
                         const std::vector<AdamWPiece>& pieces, float lr, double beta1,
                         double beta2, float eps, float weight_decay, float grad_scale,
                         float beta1_correction, float beta2_correction, DeviceScratch& scratch,
                         HostStaging& staging, cudaStream_t stream);

// ---- sum_squares.cu ---- fixed grid, fixed order; returns after synchronizing `stream`.
double sum_squares(const float* grads, size_t n, DeviceScratch& scratch, cudaStream_t stream);
// *acc += sum_i x[i] (double, fixed order, one block: for a micro-batch's losses).
void sum_add(double* acc, const float* x, size_t n, cudaStream_t stream);

// ---- convert.cu ----
void f32_to_bf16(bf16* dst, const float* src, size_t n, cudaStream_t stream);
void bf16_to_f32(float* dst, const bf16* src, size_t n, cudaStream_t stream);

}  // namespace accum::kernels::cuda
