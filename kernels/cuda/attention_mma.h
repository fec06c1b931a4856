// kernels/cuda/attention_mma.h — the tensor-core kernels behind attention.cu's launchers
// (attention_mma.cu). Same contract as attention_forward / attention_backward in ops.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace accum::kernels::cuda {

// Head sizes the tensor-core kernels are instantiated for (16, 32, 64, 128).
bool attention_mma_supports(int head_size);
// How many heads the kernels' grids start longest-first together (see block_task in
// attention_mma.cu): ACCUM_ATTENTION_HEAD_GROUP, unset = all `heads` (the default), 1 = each
// head's blocks longest to shortest before the next head's (the order up to RESULTS 4.9),
// capped at `heads`. Only the start order changes, never the bits. Throws (naming the variable
// and what it expects) when the value is not an integer >= 1.
int attention_head_group(int heads);
// The forward's kernels: the default (64 queries per block); kWide, 128 queries per block, 32
// per warp (ACCUM_ATTENTION=mma_fwd128, a candidate, head sizes up to 64; other head sizes run
// the default). Both give the same bits.
enum class ForwardKernel { kDefault, kWide };
void attention_forward_mma(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int B, int T,
                           int C, int NH, ForwardKernel kernel, cudaStream_t stream);
// delta: (B, NH, T) fp32 scratch, where the dQ kernel writes D = rowsum(dout * out) for the
// dK/dV kernel. Kernels: the default; kNarrowDkDv, 32 queries per dK/dV step instead of 64
// (ACCUM_ATTENTION=mma_dkdv32, a candidate, head sizes up to 64).
enum class BackwardKernels { kDefault, kNarrowDkDv };
void attention_backward_mma(__nv_bfloat16* dqkv, const __nv_bfloat16* dout,
                            const __nv_bfloat16* qkv, const __nv_bfloat16* out, const float* lse,
                            float* delta, int B, int T, int C, int NH, BackwardKernels kernels,
                            cudaStream_t stream);

}  // namespace accum::kernels::cuda
