// kernels/cuda/attention.cu — fused causal multi-head attention, flash-attention style
// (CPU twin: kernels/cpu/attention.cpp). The T x T score matrix is never stored.
//
// Shapes: qkv (B,T,3C) = [q | k | v], head h uses channels h*hs..(h+1)*hs, hs = C/NH;
// out (B,T,C); saved = lse (B,NH,T) fp32, the log-sum-exp of each query row.
//
//   forward, per (b,h), query i (online softmax over key tiles j <= i):
//     s_ij = (q_i . k_j) / sqrt(hs);  m_i = max_j s_ij;  l_i = sum_j exp(s_ij - m_i)
//     out_i = sum_j exp(s_ij - m_i) v_j / l_i;  lse_i = m_i + log l_i
//   backward (dqkv written), with P_ij = exp(s_ij - lse_i) recomputed from lse:
//     D_i   = dout_i . out_i
//     dv_j  = sum_{i>=j} P_ij dout_i
//     dS_ij = P_ij (dout_i . v_j - D_i)
//     dq_i  = sum_{j<=i} dS_ij k_j / sqrt(hs);  dk_j = sum_{i>=j} dS_ij q_i / sqrt(hs)
//
// Determinism: dK/dV are summed by the thread that owns key j and dQ by the thread that
// owns query i (a separate kernel), each over a fixed order: no atomics anywhere.
// Two implementations of these formulas:
//  * tensor cores (attention_mma.cu): bf16 mma.sync with fp32 accumulation, one warp per 16
//    rows; used for head sizes 16, 32, 64 and 128 (GPT-2's is 64);
//  * this file's CUDA-core kernels: fp32 arithmetic, one thread per query (forward, dQ) or
//    key (dK/dV) with its row in registers and the other operand streamed through
//    shared-memory tiles of kTile rows. They serve head size 8 and are the simple, checkable
//    baseline the tensor-core kernels are compared with (ACCUM_ATTENTION=simple selects them
//    for every head size).
#include <cstdlib>
#include <initializer_list>
#include <string>

#include "kernels/cuda/attention_mma.h"
#include "kernels/cuda/attention_tiles.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/ops.h"

namespace accum::kernels::cuda {
namespace {

constexpr int kTile = 64;  // queries (or keys) per block == threads per block

template <int HS>
__device__ inline void load_row(float (&dst)[HS], const bf16* src, float scale) {
  for (int d = 0; d < HS; d += 8) {
    Packed128<bf16> value = load128(src + d);
    for (int k = 0; k < 8; ++k) dst[d + k] = to_f32(value[k]) * scale;
  }
}

// dst[d] = bf16(value[d] * scale), 8 channels per 16-byte access.
template <int HS>
__device__ inline void store_row(bf16* dst, const float (&value)[HS], float scale) {
  for (int d = 0; d < HS; d += 8) {
    Packed128<bf16> out;
    for (int k = 0; k < 8; ++k) out[k] = to_bf16(value[d + k] * scale);
    store128(dst + d, out);
  }
}

template <int HS>
__global__ void __launch_bounds__(kTile)
    attention_forward_kernel(bf16* out, float* lse, const bf16* qkv, int T, int C, int NH,
                             float scale) {
  __shared__ alignas(16) bf16 k_tile[kTile][HS];
  __shared__ alignas(16) bf16 v_tile[kTile][HS];
  const int bh = blockIdx.x, b = bh / NH, h = bh % NH;
  const int q_tile = blockIdx.y;
  const int i = q_tile * kTile + threadIdx.x;
  const size_t row_stride = 3 * static_cast<size_t>(C);
  const bf16* q_base = qkv + static_cast<size_t>(b) * T * row_stride + h * HS;
  const bf16* k_base = q_base + C;
  const bf16* v_base = q_base + 2 * C;
  const bool valid = i < T;

  float q[HS], o[HS];
  for (int d = 0; d < HS; ++d) o[d] = 0.f;
  if (valid) load_row<HS>(q, q_base + static_cast<size_t>(i) * row_stride, scale);
  float m = -INFINITY, l = 0.f;

  for (int kt = 0; kt <= q_tile; ++kt) {
    __syncthreads();  // the previous tile is no longer read
    load_rows<HS>(&k_tile[0][0], HS, k_base, row_stride, kt * kTile, kTile, T);
    load_rows<HS>(&v_tile[0][0], HS, v_base, row_stride, kt * kTile, kTile, T);
    __syncthreads();
    if (!valid) continue;
    const int key_count = min(kTile, i - kt * kTile + 1);  // causal: keys j <= i
    for (int j = 0; j < key_count; ++j) {
      float s = 0.f;
      for (int d = 0; d < HS; ++d) s += q[d] * to_f32(k_tile[j][d]);
      if (s > m) {  // new running max: rescale what was summed so far
        const float correction = expf(m - s);
        l *= correction;
        for (int d = 0; d < HS; ++d) o[d] *= correction;
        m = s;
      }
      const float p = expf(s - m);
      l += p;
      for (int d = 0; d < HS; ++d) o[d] += p * to_f32(v_tile[j][d]);
    }
  }
  if (!valid) return;
  bf16* out_row = out + (static_cast<size_t>(b) * T + i) * C + h * HS;
  const float inv_l = 1.f / l;
  for (int d = 0; d < HS; d += 8) {
    Packed128<bf16> value;
    for (int k = 0; k < 8; ++k) value[k] = to_bf16(o[d + k] * inv_l);
    store128(out_row + d, value);
  }
  lse[static_cast<size_t>(bh) * T + i] = m + logf(l);
}

// D_i = dout_i . out_i for every (b,h,i), for the non-tensor-core kernels (the dQ kernel of
// attention_mma.cu sums its rows' D itself). HS/8 lanes per row (row_dot_lanes), one 16-byte
// piece of dout and out each, so a warp reads 32 / (HS/8) whole rows at a time (one thread
// per row read pieces C elements apart, half of each 32-byte sector per load).
template <int HS>
__global__ void attention_backward_delta_kernel(float* delta, const bf16* dout, const bf16* out,
                                                int B, int T, int C, int NH) {
  constexpr int kLanes = HS / 8;
  const size_t thread = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t idx = thread / kLanes;
  const int piece = static_cast<int>(thread % kLanes);
  const bool valid = idx < static_cast<size_t>(B) * NH * T;
  size_t offset = 0;
  if (valid) {
    const int i = static_cast<int>(idx % T);
    const int bh = static_cast<int>(idx / T), b = bh / NH, h = bh % NH;
    offset = (static_cast<size_t>(b) * T + i) * C + h * HS + piece * 8;
  }
  const float sum = row_dot_lanes<HS>(dout + offset, out + offset, valid);
  if (valid && piece == 0) delta[idx] = sum;
}

// One thread per key j: dk_j, dv_j over query tiles qt >= j's tile.
template <int HS>
__global__ void __launch_bounds__(kTile)
    attention_backward_dkdv_kernel(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                                   const float* delta, int T, int C, int NH, float scale) {
  __shared__ alignas(16) bf16 q_tile[kTile][HS];
  __shared__ alignas(16) bf16 do_tile[kTile][HS];
  __shared__ float lse_tile[kTile], delta_tile[kTile];
  const int bh = blockIdx.x, b = bh / NH, h = bh % NH;
  const int k_tile_index = blockIdx.y;
  const int j = k_tile_index * kTile + threadIdx.x;
  const size_t row_stride = 3 * static_cast<size_t>(C);
  const bf16* q_base = qkv + static_cast<size_t>(b) * T * row_stride + h * HS;
  const bf16* do_base = dout + static_cast<size_t>(b) * T * C + h * HS;
  const float* lse_row = lse + static_cast<size_t>(bh) * T;
  const float* delta_row = delta + static_cast<size_t>(bh) * T;
  const bool valid = j < T;

  float k[HS], v[HS], dk[HS], dv[HS];
  for (int d = 0; d < HS; ++d) dk[d] = dv[d] = 0.f;
  if (valid) {
    load_row<HS>(k, q_base + static_cast<size_t>(j) * row_stride + C, 1.f);
    load_row<HS>(v, q_base + static_cast<size_t>(j) * row_stride + 2 * C, 1.f);
  }
  const int num_tiles = ceil_div(T, kTile);
  for (int qt = k_tile_index; qt < num_tiles; ++qt) {
    __syncthreads();
    load_rows<HS>(&q_tile[0][0], HS, q_base, row_stride, qt * kTile, kTile, T);
    load_rows<HS>(&do_tile[0][0], HS, do_base, C, qt * kTile, kTile, T);
    const int row = qt * kTile + threadIdx.x;
    lse_tile[threadIdx.x] = row < T ? lse_row[row] : 0.f;
    delta_tile[threadIdx.x] = row < T ? delta_row[row] : 0.f;
    __syncthreads();
    if (!valid) continue;
    const int first = max(0, j - qt * kTile);     // causal: queries i >= j
    const int last = min(kTile, T - qt * kTile);  // queries i < T
    for (int r = first; r < last; ++r) {
      float s = 0.f, dp = 0.f;
      for (int d = 0; d < HS; ++d) {
        s += to_f32(q_tile[r][d]) * k[d];
        dp += to_f32(do_tile[r][d]) * v[d];
      }
      const float p = expf(s * scale - lse_tile[r]);
      const float ds = p * (dp - delta_tile[r]);
      for (int d = 0; d < HS; ++d) {
        dv[d] += p * to_f32(do_tile[r][d]);
        dk[d] += ds * to_f32(q_tile[r][d]);
      }
    }
  }
  if (!valid) return;
  bf16* dqkv_row = dqkv + (static_cast<size_t>(b) * T + j) * row_stride + h * HS;
  store_row<HS>(dqkv_row + C, dk, scale);
  store_row<HS>(dqkv_row + 2 * C, dv, 1.f);
}

// One thread per query i: dq_i over key tiles kt <= i's tile.
template <int HS>
__global__ void __launch_bounds__(kTile)
    attention_backward_dq_kernel(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                                 const float* delta, int T, int C, int NH, float scale) {
  __shared__ alignas(16) bf16 k_tile[kTile][HS];
  __shared__ alignas(16) bf16 v_tile[kTile][HS];
  const int bh = blockIdx.x, b = bh / NH, h = bh % NH;
  const int q_tile = blockIdx.y;
  const int i = q_tile * kTile + threadIdx.x;
  const size_t row_stride = 3 * static_cast<size_t>(C);
  const bf16* q_base = qkv + static_cast<size_t>(b) * T * row_stride + h * HS;
  const bool valid = i < T;

  float q[HS], dO[HS], dq[HS];
  for (int d = 0; d < HS; ++d) dq[d] = 0.f;
  float lse_i = 0.f, delta_i = 0.f;
  if (valid) {
    load_row<HS>(q, q_base + static_cast<size_t>(i) * row_stride, 1.f);
    load_row<HS>(dO, dout + (static_cast<size_t>(b) * T + i) * C + h * HS, 1.f);
    lse_i = lse[static_cast<size_t>(bh) * T + i];
    delta_i = delta[static_cast<size_t>(bh) * T + i];
  }
  for (int kt = 0; kt <= q_tile; ++kt) {
    __syncthreads();
    load_rows<HS>(&k_tile[0][0], HS, q_base + C, row_stride, kt * kTile, kTile, T);
    load_rows<HS>(&v_tile[0][0], HS, q_base + 2 * C, row_stride, kt * kTile, kTile, T);
    __syncthreads();
    if (!valid) continue;
    const int key_count = min(kTile, i - kt * kTile + 1);
    for (int c = 0; c < key_count; ++c) {
      float s = 0.f, dp = 0.f;
      for (int d = 0; d < HS; ++d) {
        s += q[d] * to_f32(k_tile[c][d]);
        dp += dO[d] * to_f32(v_tile[c][d]);
      }
      const float p = expf(s * scale - lse_i);
      const float ds = p * (dp - delta_i);
      for (int d = 0; d < HS; ++d) dq[d] += ds * to_f32(k_tile[c][d]);
    }
  }
  if (!valid) return;
  store_row<HS>(dqkv + (static_cast<size_t>(b) * T + i) * row_stride + h * HS, dq, scale);
}

void check_attention_args(const char* op, std::initializer_list<const void*> buffers, int C,
                          int NH) {
  if (NH <= 0 || C % NH != 0) {
    cuda_fatal(op,
               ("C=" + std::to_string(C) + " is not divisible by NH=" + std::to_string(NH)).c_str(),
               __FILE__, __LINE__);
  }
  const int hs = C / NH;
  // The job spec validator refuses other head sizes up front (spec::kCudaAttentionHeadSizes
  // in daemon/spec/spec.h): change both together.
  if (hs != 8 && hs != 16 && hs != 32 && hs != 64 && hs != 128) {
    cuda_fatal(
        op,
        ("head size " + std::to_string(hs) + " is not supported (expected 8, 16, 32, 64 or 128)")
            .c_str(),
        __FILE__, __LINE__);
  }
  for (const void* buffer : buffers) {  // every one is read or written 16 bytes at a time
    if (!aligned16(buffer)) {
      cuda_fatal(op, "attention buffers must be 16-byte aligned", __FILE__, __LINE__);
    }
  }
}

// Calls body(std::integral_constant<int, HS>) for the runtime head size.
template <typename Body>
void dispatch_head_size(int hs, Body body) {
  switch (hs) {
    case 8:
      body(std::integral_constant<int, 8>{});
      break;
    case 16:
      body(std::integral_constant<int, 16>{});
      break;
    case 32:
      body(std::integral_constant<int, 32>{});
      break;
    case 64:
      body(std::integral_constant<int, 64>{});
      break;
    default:
      body(std::integral_constant<int, 128>{});
      break;  // validated before
  }
}

// ACCUM_ATTENTION, read at every call: unset or empty = tensor cores; "simple" = CUDA cores;
// candidates (attention_mma.h): "mma_dkdv32" = tensor cores with 32-query dK/dV steps,
// "mma_fwd128" = a forward of 128 queries per block. Any other value throws, naming the
// accepted ones: a misspelt or retired switch would otherwise run, and be measured as, the
// default.
enum class AttentionChoice { kDefault, kSimple, kNarrowDkDv, kWideForward };
AttentionChoice attention_choice() {
  const char* value = std::getenv("ACCUM_ATTENTION");
  if (value == nullptr || *value == '\0') return AttentionChoice::kDefault;
  const std::string choice = value;
  if (choice == "simple") return AttentionChoice::kSimple;
  if (choice == "mma_dkdv32") return AttentionChoice::kNarrowDkDv;
  if (choice == "mma_fwd128") return AttentionChoice::kWideForward;
  cuda_fatal("attention",
             ("ACCUM_ATTENTION='" + choice +
              "': expected simple, mma_dkdv32 or mma_fwd128 (or unset for the default "
              "tensor-core kernels)")
                 .c_str(),
             __FILE__, __LINE__);
}

// Tensor cores unless ACCUM_ATTENTION=simple or the head size has no mma instantiation.
bool use_tensor_cores(AttentionChoice choice, int hs) {
  return choice != AttentionChoice::kSimple && attention_mma_supports(hs);
}

}  // namespace

void attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                       cudaStream_t stream) {
  check_attention_args("attention_forward", {out, qkv}, C, NH);
  const int hs = C / NH;
  const AttentionChoice choice = attention_choice();
  if (use_tensor_cores(choice, hs)) {
    const ForwardKernel kernel =
        choice == AttentionChoice::kWideForward ? ForwardKernel::kWide : ForwardKernel::kDefault;
    attention_forward_mma(out, lse, qkv, B, T, C, NH, kernel, stream);
    return;
  }
  const float scale = 1.f / sqrtf(static_cast<float>(hs));
  const dim3 grid(B * NH, ceil_div(T, kTile));  // B*NH on x: y stops at 65535
  dispatch_head_size(hs, [&](auto head_size) {
    attention_forward_kernel<decltype(head_size)::value>
        <<<grid, kTile, 0, stream>>>(out, lse, qkv, T, C, NH, scale);
  });
  CUDA_CHECK_LAUNCH("attention_forward_kernel");
}

void attention_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out,
                        const float* lse, int B, int T, int C, int NH, DeviceScratch& scratch,
                        cudaStream_t stream) {
  check_attention_args("attention_backward", {dqkv, dout, qkv, out}, C, NH);
  const int hs = C / NH;
  const float scale = 1.f / sqrtf(static_cast<float>(hs));
  const size_t rows = static_cast<size_t>(B) * NH * T;
  auto* delta = static_cast<float*>(scratch.get(ScratchSlot::kRowStats, sizeof(float) * rows));
  const dim3 grid(B * NH, ceil_div(T, kTile));  // B*NH on x: y stops at 65535
  const AttentionChoice choice = attention_choice();
  const bool tensor_cores = use_tensor_cores(choice, hs);
  dispatch_head_size(hs, [&](auto head_size) {
    constexpr int HS = decltype(head_size)::value;
    if (tensor_cores) {  // the dQ kernel writes D, then the dK/dV kernel reads it
      const BackwardKernels kernels = choice == AttentionChoice::kNarrowDkDv
                                          ? BackwardKernels::kNarrowDkDv
                                          : BackwardKernels::kDefault;
      attention_backward_mma(dqkv, dout, qkv, out, lse, delta, B, T, C, NH, kernels, stream);
      return;
    }
    const unsigned delta_grid =
        static_cast<unsigned>(ceil_div(rows * (HS / 8), static_cast<size_t>(256)));
    attention_backward_delta_kernel<HS>
        <<<delta_grid, 256, 0, stream>>>(delta, dout, out, B, T, C, NH);
    CUDA_CHECK_LAUNCH("attention_backward_delta_kernel");
    attention_backward_dkdv_kernel<HS>
        <<<grid, kTile, 0, stream>>>(dqkv, dout, qkv, lse, delta, T, C, NH, scale);
    CUDA_CHECK_LAUNCH("attention_backward_dkdv_kernel");
    attention_backward_dq_kernel<HS>
        <<<grid, kTile, 0, stream>>>(dqkv, dout, qkv, lse, delta, T, C, NH, scale);
    CUDA_CHECK_LAUNCH("attention_backward_dq_kernel");
  });
}

}  // namespace accum::kernels::cuda
