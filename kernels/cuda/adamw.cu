// kernels/cuda/adamw.cu — fused AdamW over fp32 master weights (CPU twin: kernels/cpu/adamw.cpp).
// PyTorch semantics (bias-corrected moments, decoupled weight decay), all in fp32:
//
//   g = grads * grad_scale
//   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   m_hat = m / (1 - beta1^t);    v_hat = v / (1 - beta2^t)
//   p -= lr * (weight_decay * p + m_hat / (sqrt(v_hat) + eps))
//   working = bf16(p)   (if working != null: the copy the forward reads)
//
// The caller passes the bias corrections (1 - beta^t) computed in double on the host, and
// 1 - beta is taken in double here before rounding (as the CPU twin and torch.optim do): in
// fp32, 1 - 0.999f is 1.3e-5 off.
// One pass over memory: read g, m, v, p; write m, v, p and the bf16 copy. adamw_update_pieces
// runs the same update over every tensor of a model in one launch.
#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/ops.h"

namespace accum::kernels::cuda {
namespace {

struct AdamWArgs {
  float lr, beta1, beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay, grad_scale,
      beta1_correction, beta2_correction;
};

AdamWArgs adamw_args(float lr, double beta1, double beta2, float eps, float weight_decay,
                     float grad_scale, float beta1_correction, float beta2_correction) {
  return {lr,
          static_cast<float>(beta1),
          static_cast<float>(beta2),
          static_cast<float>(1.0 - beta1),
          static_cast<float>(1.0 - beta2),
          eps,
          weight_decay,
          grad_scale,
          beta1_correction,
          beta2_correction};
}

// The update of one element (the formulas above); p, m, v are updated in place.
__device__ inline void adamw_element(float& p, float& m, float& v, float grad, const AdamWArgs& a) {
  const float g = grad * a.grad_scale;
  m = a.beta1 * m + a.one_minus_beta1 * g;
  v = a.beta2 * v + a.one_minus_beta2 * g * g;
  const float m_hat = m / a.beta1_correction;
  const float v_hat = v / a.beta2_correction;
  p -= a.lr * (a.weight_decay * p + m_hat / (sqrtf(v_hat) + a.eps));
}

// Four consecutive values at index i: 16-byte fp32 accesses, 8-byte bf16 store.
__device__ inline void adamw_vec4(float* master, bf16* working, const float* grads, float* m_state,
                                  float* v_state, size_t i, const AdamWArgs& args) {
  ACCUM_VECTOR_ACCESS(master + i, 16);
  ACCUM_VECTOR_ACCESS(m_state + i, 16);
  ACCUM_VECTOR_ACCESS(v_state + i, 16);
  ACCUM_VECTOR_ACCESS(grads + i, 16);
  float4 p = *reinterpret_cast<const float4*>(master + i);
  float4 m = *reinterpret_cast<const float4*>(m_state + i);
  float4 v = *reinterpret_cast<const float4*>(v_state + i);
  const float4 g = *reinterpret_cast<const float4*>(grads + i);
  adamw_element(p.x, m.x, v.x, g.x, args);
  adamw_element(p.y, m.y, v.y, g.y, args);
  adamw_element(p.z, m.z, v.z, g.z, args);
  adamw_element(p.w, m.w, v.w, g.w, args);
  *reinterpret_cast<float4*>(master + i) = p;
  *reinterpret_cast<float4*>(m_state + i) = m;
  *reinterpret_cast<float4*>(v_state + i) = v;
  if (working != nullptr) {
    ACCUM_VECTOR_ACCESS(working + i, 8);
    auto pair = [](float lo, float hi) {  // two bf16, the lower index in the low half
      return static_cast<unsigned>(__bfloat16_as_ushort(to_bf16(lo))) |
             (static_cast<unsigned>(__bfloat16_as_ushort(to_bf16(hi))) << 16);
    };
    *reinterpret_cast<uint2*>(working + i) = make_uint2(pair(p.x, p.y), pair(p.z, p.w));
  }
}

__device__ inline void adamw_scalar(float* master, bf16* working, const float* grads,
                                    float* m_state, float* v_state, size_t i,
                                    const AdamWArgs& args) {
  float p = master[i], m = m_state[i], v = v_state[i];
  adamw_element(p, m, v, grads[i], args);
  m_state[i] = m;
  v_state[i] = v;
  master[i] = p;
  if (working != nullptr) working[i] = to_bf16(p);
}

// kVec = 4: n % 4 == 0 and 16-byte aligned fp32 arrays (8-byte aligned bf16 copy): every
// access is a vector of 4, so the pass runs near the memory bandwidth.
template <int kVec>
__global__ void adamw_kernel(float* master, bf16* working, const float* grads, float* m_state,
                             float* v_state, size_t n, AdamWArgs args) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x * kVec;
  for (size_t i = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kVec; i < n;
       i += stride) {
    if constexpr (kVec == 4) {
      adamw_vec4(master, working, grads, m_state, v_state, i, args);
    } else {
      adamw_scalar(master, working, grads, m_state, v_state, i, args);
    }
  }
}

// ---- every tensor in one launch ----
// A model has a few hundred tensors, most of them small: one launch per tensor leaves the
// GPU mostly waiting between launches. Here each block updates kPieceChunk values of one
// piece; the host lays the pieces' blocks end to end (first_block) and each block finds its
// piece by binary search in the table.
constexpr int kPieceThreads = 256;
constexpr size_t kPieceChunk = 4 * 4 * kPieceThreads;  // 4 float4 per thread

struct DevicePiece {
  size_t offset, count, moment_offset;
  unsigned first_block;
  unsigned flags;  // kDecay | kVector
};
constexpr unsigned kDecay = 1, kVector = 2;

__global__ void __launch_bounds__(kPieceThreads)
    adamw_pieces_kernel(float* master, bf16* working, const float* grads, float* m_state,
                        float* v_state, const DevicePiece* pieces, int n_pieces, AdamWArgs args) {
  int lo = 0, hi = n_pieces - 1;  // the last piece whose first block is <= blockIdx.x
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (pieces[mid].first_block <= blockIdx.x) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const DevicePiece piece = pieces[lo];
  if (!(piece.flags & kDecay)) args.weight_decay = 0.f;
  float* p = master + piece.offset;
  bf16* w = working != nullptr ? working + piece.offset : nullptr;
  const float* g = grads + piece.offset;
  float* m = m_state + piece.moment_offset;
  float* v = v_state + piece.moment_offset;
  const size_t begin = static_cast<size_t>(blockIdx.x - piece.first_block) * kPieceChunk;
  const size_t end = min(piece.count, begin + kPieceChunk);
  if (piece.flags & kVector) {
    for (size_t i = begin + 4 * threadIdx.x; i < end; i += 4 * kPieceThreads) {
      adamw_vec4(p, w, g, m, v, i, args);
    }
  } else {
    for (size_t i = begin + threadIdx.x; i < end; i += kPieceThreads) {
      adamw_scalar(p, w, g, m, v, i, args);
    }
  }
}

}  // namespace

void adamw_update(float* master, bf16* working, const float* grads, float* m, float* v, size_t n,
                  float lr, double beta1, double beta2, float eps, float weight_decay,
                  float grad_scale, float beta1_correction, float beta2_correction,
                  cudaStream_t stream) {
  if (n == 0) return;
  const AdamWArgs args = adamw_args(lr, beta1, beta2, eps, weight_decay, grad_scale,
                                    beta1_correction, beta2_correction);
  const bool vector = n % 4 == 0 && aligned16(master) && aligned16(grads) && aligned16(m) &&
                      aligned16(v) && (reinterpret_cast<uintptr_t>(working) & 7u) == 0;
  const int block = 256;
  const size_t max_grid = 65535;
  const size_t per_block = static_cast<size_t>(block) * (vector ? 4 : 1);
  const unsigned grid = static_cast<unsigned>(std::min(max_grid, ceil_div(n, per_block)));
  if (vector) {
    adamw_kernel<4><<<grid, block, 0, stream>>>(master, working, grads, m, v, n, args);
  } else {
    adamw_kernel<1><<<grid, block, 0, stream>>>(master, working, grads, m, v, n, args);
  }
  CUDA_CHECK_LAUNCH("adamw_kernel");
}

void adamw_update_pieces(float* master, bf16* working, const float* grads, float* m, float* v,
                         const std::vector<AdamWPiece>& pieces, float lr, double beta1,
                         double beta2, float eps, float weight_decay, float grad_scale,
                         float beta1_correction, float beta2_correction, DeviceScratch& scratch,
                         HostStaging& staging, cudaStream_t stream) {
  std::vector<DevicePiece> table;
  table.reserve(pieces.size());
  size_t blocks = 0;
  for (const AdamWPiece& piece : pieces) {
    if (piece.count == 0) continue;
    // float4 access needs every start 16-byte aligned (the bf16 copy's 8-byte aligned).
    const bool vector = piece.offset % 4 == 0 && piece.moment_offset % 4 == 0 &&
                        piece.count % 4 == 0 && aligned16(master) && aligned16(grads) &&
                        aligned16(m) && aligned16(v) &&
                        (reinterpret_cast<uintptr_t>(working) & 7u) == 0;
    table.push_back({piece.offset, piece.count, piece.moment_offset, static_cast<unsigned>(blocks),
                     (piece.decay ? kDecay : 0u) | (vector ? kVector : 0u)});
    blocks += ceil_div(piece.count, kPieceChunk);
  }
  if (table.empty()) return;
  if (blocks > 0x7fffffffu) {  // 2^31 blocks of 4096: 8.8e12 values, far past any device
    throw std::runtime_error("adamw_update_pieces: " + std::to_string(blocks) +
                             " blocks exceed the grid limit of 2^31 - 1");
  }
  auto* device_table = static_cast<DevicePiece*>(
      scratch.get(ScratchSlot::kTable, sizeof(DevicePiece) * table.size()));
  staging.copy_to_device(device_table, table.data(), sizeof(DevicePiece) * table.size());
  const AdamWArgs args = adamw_args(lr, beta1, beta2, eps, weight_decay, grad_scale,
                                    beta1_correction, beta2_correction);
  adamw_pieces_kernel<<<static_cast<unsigned>(blocks), kPieceThreads, 0, stream>>>(
      master, working, grads, m, v, device_table, static_cast<int>(table.size()), args);
  CUDA_CHECK_LAUNCH("adamw_pieces_kernel");
}

}  // namespace accum::kernels::cuda
