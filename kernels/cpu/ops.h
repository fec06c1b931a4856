// kernels/cpu/ops.h — the CPU ops as plain functions templated on the scalar type.
//
// The CPU back end (cpu_backend.cpp) runs the float instantiations; tests run the
// double instantiations too, so finite differences have the precision to check
// every backward. Each op lives in its own file (encoder.cpp, layernorm.cpp, ...)
// with its formula and shapes at the top, and is explicitly instantiated there
// for float and double.
//
// Conventions (the same as kernels/backend.h):
//  * Shapes: B batch, T time, C channels, NH heads, V vocab, N = B*T rows; all
//    row-major and contiguous.
//  * Forward ops WRITE their outputs. Backward ops store parameter gradients by
//    their GradMode (kAdd: +=, kWrite: =; encoder_backward always adds) and WRITE
//    activation gradients, except layernorm_backward's dinp (the residual stream's
//    gradient), which adds.
//  * Results are deterministic: bit-identical run to run for a fixed thread count.
//    Reductions over rows (dweight, dbias, dwte, ...) are parallel over columns and
//    sum rows in order, so they do not depend on the thread count at all;
//    sum_squares does not either. Only OpenBLAS's own blocking may.
//  * Ops parallelize with OpenMP; BLAS calls made inside an OpenMP region run
//    OpenBLAS single-threaded (see attention.cpp).
//
// Thread safety: the ops may be called from one thread at a time (they share
// OpenBLAS's thread setting and per-thread scratch).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/backend.h"

namespace accum::kernels::cpu {

// ---- encoder.cpp -------------------------------------------------------------
// out(B,T,C) = wte[tokens[b,t], :] + wpe[t, :]. REQUIRES: 0 <= tokens < V (rows of wte).
template <typename F>
void encoder_forward(F* out, const int32_t* tokens, const F* wte, const F* wpe, int B, int T,
                     int C);
// dwte[tokens[b,t], :] += dout[b,t,:]; dwpe[t,:] += dout[b,t,:].
template <typename F>
void encoder_backward(F* dwte, F* dwpe, const F* dout, const int32_t* tokens, int B, int T, int C);

// ---- layernorm.cpp -----------------------------------------------------------
inline constexpr double kLayerNormEps = 1e-5;
// out(N,C) = (inp - mean) * rstd * weight + bias; mean(N), rstd(N) saved.
template <typename F>
void layernorm_forward(F* out, F* mean, F* rstd, const F* inp, const F* weight, const F* bias,
                       int N, int C);
// dinp += d/dinp (the residual stream); dweight, dbias by `mode`; dinp_sum (may be null) by
// `mode`: sum_rows of dinp after the add (see kernels/backend.h).
template <typename F>
void layernorm_backward(F* dinp, F* dweight, F* dbias, F* dinp_sum, const F* dout, const F* inp,
                        const F* weight, const F* mean, const F* rstd, int N, int C, GradMode mode);

// ---- matmul.cpp --------------------------------------------------------------
// out(N,OC) = inp(N,C) @ W + bias; W (C,OC) for kInOut, W^T with W (OC,C) for kOutIn.
// bias may be null. Rows of out are out_ld elements apart (>= OC; 0: OC); only OC columns are
// written.
template <typename F>
void matmul_forward(F* out, const F* inp, const F* weight, const F* bias, int N, int C, int OC,
                    WeightLayout layout, int out_ld = 0);
// dinp = dout @ W^T (written); by `mode`, dweight (+)= inp^T @ dout (kInOut) |
// dout^T @ inp (kOutIn) and dbias (+)= sum_rows dout. dinp, dweight and dbias may each be
// null. Rows of dout are dout_ld elements apart (>= OC; 0: OC).
template <typename F>
void matmul_backward(F* dinp, F* dweight, F* dbias, const F* dout, const F* inp, const F* weight,
                     int N, int C, int OC, WeightLayout layout, GradMode mode, int dout_ld = 0);

// ---- attention.cpp -----------------------------------------------------------
// Causal multi-head attention, qkv(B,T,3C) = [q | k | v], hs = C/NH, out(B,T,C),
// probs(B,NH,T,T) saved (zero above the diagonal). row_block is the query-row
// block that skips work above the diagonal; tests pass small values to exercise it.
inline constexpr int kAttentionRowBlock = 64;
template <typename F>
void attention_forward(F* out, F* probs, const F* qkv, int B, int T, int C, int NH,
                       int row_block = kAttentionRowBlock);
// dqkv(B,T,3C) = d/dqkv of <dout, out> (written), from the saved probs.
template <typename F>
void attention_backward(F* dqkv, const F* dout, const F* qkv, const F* probs, int B, int T, int C,
                        int NH, int row_block = kAttentionRowBlock);

// ---- gelu.cpp ------------------------------------------------------------------
// out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
template <typename F>
void gelu_forward(F* out, const F* inp, size_t n);
// dinp = gelu'(inp) * dout (written)
template <typename F>
void gelu_backward(F* dinp, const F* inp, const F* dout, size_t n);
// d *= gelu'(inp): d holds dout on entry and the gradient w.r.t. inp on return.
template <typename F>
void gelu_backward_inplace(F* d, const F* inp, size_t n);

// ---- residual.cpp --------------------------------------------------------------
// out = a + b (out may alias a or b).
template <typename F>
void residual_forward(F* out, const F* a, const F* b, size_t n);

// ---- crossentropy.cpp ----------------------------------------------------------
// Fused softmax + cross-entropy over logits(N,V), targets(N), optional mask(N):
//   losses[i] = mask_i ? -log softmax(logits_i)[targets_i] : 0
//   dlogits[i] = mask_i ? dloss * (softmax(logits_i) - onehot(targets_i)) : 0  (written)
// dlogits may be null (loss only) or alias logits. Rows of both are ld elements apart (>= V;
// 0: V); only V columns are read, and dlogits' padding columns V..ld are written 0. Throws
// std::invalid_argument when a counted target is outside [0, V).
template <typename F>
void crossentropy_forward_backward(F* losses, F* dlogits, const F* logits, const int32_t* targets,
                                   const uint8_t* mask, F dloss, int N, int V, int ld = 0);

// ---- adamw.cpp -----------------------------------------------------------------
// PyTorch AdamW (torch.optim.AdamW, single-tensor path) on n values, in its operation order:
//   g = grads*grad_scale; p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g g
//   p -= (lr/(1-b1^t)) m / (sqrt(v)/sqrt(1-b2^t) + eps)
template <typename F>
void adamw_update(F* params, const F* grads, F* m, F* v, size_t n, const AdamWParams& hp);

// ---- global_norm.cpp -----------------------------------------------------------
// sum_i x_i^2 accumulated in double, in fixed-size blocks summed in block order: the
// result does not depend on the thread count.
template <typename F>
double sum_squares(const F* x, size_t n);

}  // namespace accum::kernels::cpu
