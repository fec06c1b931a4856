// kernels/cuda/encoder.cu — token + position embedding (CPU twin: kernels/cpu/encoder.cpp).
//
//   forward:  out(B,T,C) = wte[tokens[b,t], :] + wpe[t, :]
//   backward: dwte[tokens[b,t], :] += dout[b,t,:];  dwpe[t, :] += sum_b dout[b,t,:]
//
// Determinism: several positions share a token, so a scatter-add with float atomics
// would sum in a run-dependent order. Instead the caller's host copy of the tokens is
// bucketed on the host (a counting sort, while the device is still busy with the
// backward) and the buckets travel through pinned staging: bucket u lists its positions
// in increasing order and one block per bucket sums them in that order, in fp32. Nothing
// here waits for the device.
#include <algorithm>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/ops.h"

namespace accum::kernels::cuda {
namespace {

// One thread per 8 channels (Packed128) when C % 8 == 0, else one per channel.
template <bool kVector>
__global__ void encoder_forward_kernel(bf16* out, const int32_t* tokens, const bf16* wte,
                                       const bf16* wpe, int N, int T, int C) {
  constexpr int kPer = kVector ? 8 : 1;
  const size_t idx = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kPer;
  if (idx >= static_cast<size_t>(N) * C) return;
  const int row = static_cast<int>(idx / C);  // b*T + t
  const int c = static_cast<int>(idx % C);
  const int t = row % T;
  const bf16* wte_row = wte + static_cast<size_t>(tokens[row]) * C + c;
  const bf16* wpe_row = wpe + static_cast<size_t>(t) * C + c;
  if constexpr (kVector) {
    Packed128<bf16> a = load128(wte_row);
    Packed128<bf16> p = load128(wpe_row);
    Packed128<bf16> o;
    for (int k = 0; k < 8; ++k) o[k] = to_bf16(to_f32(a[k]) + to_f32(p[k]));
    store128(out + idx, o);
  } else {
    out[idx] = to_bf16(to_f32(*wte_row) + to_f32(*wpe_row));
  }
}

// dwpe[t, c] += sum_{b=0..B-1} dout[b, t, c], b ascending.
__global__ void encoder_backward_wpe_kernel(float* dwpe, const bf16* dout, int B, int T, int C) {
  const size_t idx = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<size_t>(T) * C) return;
  float sum = 0.f;
  for (int b = 0; b < B; ++b) sum += to_f32(dout[static_cast<size_t>(b) * T * C + idx]);
  dwpe[idx] += sum;
}

// Block (u, channel chunk): dwte[token_u, c] += sum over bucket u's positions, in order.
__global__ void encoder_backward_wte_kernel(float* dwte, const bf16* dout,
                                            const int32_t* bucket_token,
                                            const int32_t* bucket_start, const int32_t* positions,
                                            int C) {
  const int u = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float sum = 0.f;
  for (int k = bucket_start[u]; k < bucket_start[u + 1]; ++k) {
    sum += to_f32(dout[static_cast<size_t>(positions[k]) * C + c]);
  }
  dwte[static_cast<size_t>(bucket_token[u]) * C + c] += sum;
}

}  // namespace

void encoder_forward(bf16* out, const int32_t* tokens, const bf16* wte, const bf16* wpe, int B,
                     int T, int C, cudaStream_t stream) {
  const int N = B * T;
  const int block = 256;
  const bool vector = C % 8 == 0 && aligned16(out) && aligned16(wte) && aligned16(wpe);
  const size_t threads = static_cast<size_t>(N) * C / (vector ? 8 : 1);
  const unsigned grid = static_cast<unsigned>(ceil_div(threads, static_cast<size_t>(block)));
  if (vector) {
    encoder_forward_kernel<true><<<grid, block, 0, stream>>>(out, tokens, wte, wpe, N, T, C);
  } else {
    encoder_forward_kernel<false><<<grid, block, 0, stream>>>(out, tokens, wte, wpe, N, T, C);
  }
  CUDA_CHECK_LAUNCH("encoder_forward_kernel");
}

void encoder_backward(float* dwte, float* dwpe, const bf16* dout, const int32_t* host_tokens, int B,
                      int T, int C, DeviceScratch& scratch, HostStaging& staging,
                      cudaStream_t stream) {
  const int N = B * T;
  const int block = 256;
  {
    const size_t n = static_cast<size_t>(T) * C;
    const unsigned grid = static_cast<unsigned>(ceil_div(n, static_cast<size_t>(block)));
    encoder_backward_wpe_kernel<<<grid, block, 0, stream>>>(dwpe, dout, B, T, C);
    CUDA_CHECK_LAUNCH("encoder_backward_wpe_kernel");
  }

  // Bucket positions by token on the host: a counting sort keeps positions ascending.
  int32_t max_token = 0;
  for (int i = 0; i < N; ++i) {
    if (host_tokens[i] < 0) {
      cuda_fatal("encoder_backward", ("negative token id at position " + std::to_string(i)).c_str(),
                 __FILE__, __LINE__);
    }
    max_token = std::max(max_token, host_tokens[i]);
  }
  std::vector<int32_t> count(static_cast<size_t>(max_token) + 1, 0);
  for (int i = 0; i < N; ++i) ++count[host_tokens[i]];
  // Layout in one upload: [U tokens][U+1 starts][N positions].
  std::vector<int32_t> bucket_token, bucket_start;
  std::vector<int32_t> first_index(count.size(), -1);
  int32_t offset = 0;
  for (size_t tok = 0; tok < count.size(); ++tok) {
    if (count[tok] == 0) continue;
    first_index[tok] = offset;
    bucket_token.push_back(static_cast<int32_t>(tok));
    bucket_start.push_back(offset);
    offset += count[tok];
  }
  bucket_start.push_back(offset);
  const int U = static_cast<int>(bucket_token.size());
  std::vector<int32_t> packed(static_cast<size_t>(U) + (U + 1) + N);
  std::copy(bucket_token.begin(), bucket_token.end(), packed.begin());
  std::copy(bucket_start.begin(), bucket_start.end(), packed.begin() + U);
  int32_t* positions = packed.data() + U + (U + 1);
  for (int i = 0; i < N; ++i) positions[first_index[host_tokens[i]]++] = i;

  auto* device_packed =
      static_cast<int32_t*>(scratch.get(ScratchSlot::kTokens, sizeof(int32_t) * packed.size()));
  staging.copy_to_device(device_packed, packed.data(), sizeof(int32_t) * packed.size());
  const dim3 grid(U, ceil_div(C, block));
  encoder_backward_wte_kernel<<<grid, block, 0, stream>>>(
      dwte, dout, device_packed, device_packed + U, device_packed + 2 * U + 1, C);
  CUDA_CHECK_LAUNCH("encoder_backward_wte_kernel");
}

}  // namespace accum::kernels::cuda
