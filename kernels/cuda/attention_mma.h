// kernels/cuda/attention_mma.h — the tensor-core kernels behind attention.cu's launchers
// (attention_mma.cu). Same contract as attention_forward / attention_backward in ops.h;
// the backward takes D = rowsum(dout * out) precomputed by attention.cu.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace accum::kernels::cuda {

// Head sizes the tensor-core kernels are instantiated for (16, 32, 64, 128).
bool attention_mma_supports(int head_size);
void attention_forward_mma(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int B, int T,
                           int C, int NH, cudaStream_t stream);
// wide_dkdv: 64 queries per dK/dV step instead of 32 (ACCUM_ATTENTION=mma_dkdv64, measured
// against the default by bench/gpu.sh; head sizes up to 64, else ignored).
void attention_backward_mma(__nv_bfloat16* dqkv, const __nv_bfloat16* dout,
                            const __nv_bfloat16* qkv, const float* lse, const float* delta, int B,
                            int T, int C, int NH, bool wide_dkdv, cudaStream_t stream);

}  // namespace accum::kernels::cuda
