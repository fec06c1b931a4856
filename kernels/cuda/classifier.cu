// kernels/cuda/classifier.cu — fused softmax + cross-entropy + dlogits (CPU twin:
// kernels/cpu/crossentropy.cpp, op crossentropy_forward_backward).
//
// For each row i of logits(N, V) with target y_i and mask_i (null mask = all counted):
//   lse_i     = max_v x_iv + log sum_v exp(x_iv - max_v x_iv)          (fp32)
//   losses[i] = mask_i ? lse_i - x_{i,y_i} : 0
//   dlogits[i, v] = mask_i ? dloss * (exp(x_iv - lse_i) - [v == y_i]) : 0   (written, not +=)
//
// One block per row, two passes over the row: (1) per-thread online max/sum, combined
// by fixed block trees (deterministic); (2) dlogits. No probability tensor is kept;
// dlogits may alias logits (each element is read, then written, by the same thread).
// Rows are ld (>= V) elements apart. When ld % 8 == 0 (a padded vocabulary, 50304, or the
// padded rows of an odd one, 50257 in rows of 50304: Backend::row_stride) the rows are read
// and written in 16-byte chunks, and pass 1 takes one max and one rescale per chunk of 8; the
// row's last chunk may reach past V into the padding, whose values count as -inf. Every
// padding column of dlogits (V..ld) is written 0: the model's LM head multiplies them by the
// padding rows it reads after wte. Rows an odd number of elements apart take plain coalesced
// bf16 loads. With dlogits and a row that fits in shared memory, pass 1 also caches the row there,
// so the logits are read from DRAM once, not twice. Exponentials run in base 2 (one fma + ex2
// each) and the target's -1 is applied to its chunk only.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/ops.h"

namespace accum::kernels::cuda {
namespace {

constexpr int kThreads = 512;

// Exponentials in base 2 (kLog2e): with the max and lse pre-scaled, each is one fma and one
// ex2 (the kernel issued ~20 instructions per logit with expf(x - max)).

// Folds logits x[0..n) into the online statistics (max, sum of exp(x - max)).
template <int n>
__device__ inline void online_add(float& max, float& sum, const float (&x)[n]) {
  float chunk_max = x[0];
  for (int k = 1; k < n; ++k) chunk_max = fmaxf(chunk_max, x[k]);
  if (chunk_max == -INFINITY) return;  // nothing to add (exp(-inf) terms)
  if (chunk_max > max) {
    sum *= exp2f((max - chunk_max) * kLog2e);  // 0 while max is still -inf
    max = chunk_max;
  }
  const float max_log2 = max * kLog2e;
  for (int k = 0; k < n; ++k) sum += exp2f(fmaf(x[k], kLog2e, -max_log2));
}

// kCached (with kVector): pass 1 also keeps the row in shared memory (V bf16), so pass 2
// reads it from there and the logits cross DRAM once.
template <bool kVector, bool kCached>
__global__ void crossentropy_forward_backward_kernel(float* losses, bf16* dlogits,
                                                     const bf16* logits, const int32_t* targets,
                                                     const uint8_t* mask, float dloss, int V,
                                                     int ld) {
  __shared__ float shared[kWarpSize];
  extern __shared__ __align__(16) unsigned char row_cache_bytes[];
  bf16* row_cache = reinterpret_cast<bf16*>(row_cache_bytes);
  const int row = blockIdx.x;
  const size_t base = static_cast<size_t>(row) * ld;
  const bf16* x = logits + base;
  const bool counted = mask == nullptr || mask[row] != 0;
  if (!counted) {
    if (threadIdx.x == 0) losses[row] = 0.f;
    if (dlogits != nullptr) {
      for (int v = threadIdx.x; v < ld; v += kThreads) dlogits[base + v] = to_bf16(0.f);
    }
    return;
  }
  // Pass 1: thread-local online softmax statistics.
  float local_max = -INFINITY, local_sum = 0.f;
  if constexpr (kVector) {
    // kInFlight 16-byte loads issued before any is used: one load per thread at a time
    // leaves DRAM ~60% busy (ncu, H200), too few bytes in flight to cover its latency.
    constexpr int kInFlight = 4, kStep = kThreads * 8;
    for (int v0 = threadIdx.x * 8; v0 < V; v0 += kInFlight * kStep) {
      Packed128<bf16> chunks[kInFlight];
      ACCUM_UNROLL for (int u = 0; u < kInFlight; ++u) {
        if (v0 + u * kStep < V) chunks[u] = load128(x + v0 + u * kStep);
      }
      ACCUM_UNROLL for (int u = 0; u < kInFlight; ++u) {
        if (v0 + u * kStep >= V) break;
        const int v = v0 + u * kStep;
        if constexpr (kCached) store128(row_cache + v, chunks[u]);
        float values[8];
        for (int k = 0; k < 8; ++k) values[k] = to_f32(chunks[u][k]);
        if (v + 8 > V) {  // the row's last chunk reaches into the padding
          for (int k = 0; k < 8; ++k) values[k] = v + k < V ? values[k] : -INFINITY;
        }
        online_add(local_max, local_sum, values);
      }
    }
  } else {
    for (int v = threadIdx.x; v < V; v += kThreads) {
      const float values[1] = {to_f32(x[v])};
      online_add(local_max, local_sum, values);
    }
  }
  const float row_max = block_max(local_max, shared);
  const float scaled = local_max == -INFINITY ? 0.f : local_sum * expf(local_max - row_max);
  const float row_sum = block_sum(scaled, shared);
  const float lse = row_max + logf(row_sum);
  const int target = targets[row];
  const bool valid_target = target >= 0 && target < V;
  if (threadIdx.x == 0) {
    // An out-of-range target cannot be reported from the device: make the loss NaN.
    losses[row] = valid_target ? lse - to_f32(x[target]) : NAN;
  }
  __syncthreads();  // the target logit is read above before dlogits (maybe == logits) is written
  if (dlogits == nullptr) return;
  // Pass 2: dlogits = dloss * (softmax - onehot).
  bf16* dx = dlogits + base;
  const float lse_log2 = lse * kLog2e;
  if constexpr (kVector) {
    for (int v = threadIdx.x * 8; v < V; v += kThreads * 8) {
      // Each thread reads back the chunks it cached itself: no barrier needed for them.
      const Packed128<bf16> chunk = kCached ? load128(row_cache + v) : load128(x + v);
      Packed128<bf16> grad;
      float p[8];
      for (int k = 0; k < 8; ++k) {
        p[k] = exp2f(fmaf(to_f32(chunk[k]), kLog2e, -lse_log2));
        grad[k] = to_bf16(dloss * p[k]);
      }
      if (static_cast<unsigned>(target - v) < 8u) {  // the one chunk holding the target
        for (int k = 0; k < 8; ++k) {
          if (v + k == target) grad[k] = to_bf16(dloss * (p[k] - 1.f));
        }
      }
      if (v + 8 > V) {  // padding after the row's V values: 0, not exp(whatever it held)
        for (int k = 0; k < 8; ++k) grad[k] = v + k < V ? grad[k] : to_bf16(0.f);
      }
      store128(dx + v, grad);
    }
    // The chunks of padding after the row's last one: 0.
    Packed128<bf16> zeros;
    for (int k = 0; k < 8; ++k) zeros[k] = to_bf16(0.f);
    for (int v = ceil_div(V, 8) * 8 + threadIdx.x * 8; v < ld; v += kThreads * 8) {
      store128(dx + v, zeros);
    }
  } else {
    for (int v = threadIdx.x; v < V; v += kThreads) {
      const float indicator = v == target ? 1.f : 0.f;
      dx[v] = to_bf16(dloss * (expf(to_f32(x[v]) - lse) - indicator));
    }
    for (int v = V + threadIdx.x; v < ld; v += kThreads) dx[v] = to_bf16(0.f);
  }
}

}  // namespace

void crossentropy_forward_backward(float* losses, bf16* dlogits, const bf16* logits,
                                   const int32_t* targets, const uint8_t* mask, float dloss, int N,
                                   int V, int ld, cudaStream_t stream) {
  if (N == 0) return;
  const bool vector =
      ld % 8 == 0 && aligned16(logits) && (dlogits == nullptr || aligned16(dlogits));
  // The row cache: V bf16 (rounded up to whole chunks) of dynamic shared memory (100 KB for
  // GPT-2's 50257 or 50304: two blocks per SM on sm_90); only with dlogits (the loss alone
  // reads the row once anyway).
  const size_t cache_bytes = sizeof(bf16) * ceil_div(static_cast<size_t>(V), size_t{8}) * 8;
  int device = 0, max_optin = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const bool cached = vector && dlogits != nullptr &&
                      cache_bytes + kWarpSize * sizeof(float) <= static_cast<size_t>(max_optin);
  auto launch = [&](auto kernel, size_t smem) {
    allow_dynamic_shared(kernel, smem);
    kernel<<<N, kThreads, smem, stream>>>(losses, dlogits, logits, targets, mask, dloss, V, ld);
  };
  if (cached) {
    launch(crossentropy_forward_backward_kernel<true, true>, cache_bytes);
  } else if (vector) {
    launch(crossentropy_forward_backward_kernel<true, false>, 0);
  } else {
    launch(crossentropy_forward_backward_kernel<false, false>, 0);
  }
  CUDA_CHECK_LAUNCH("crossentropy_forward_backward_kernel");
}

}  // namespace accum::kernels::cuda
