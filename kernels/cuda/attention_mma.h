// kernels/cuda/attention_mma.h — the tensor-core kernels behind attention.cu's launchers
// (attention_mma.cu). Same contract as attention_forward / attention_backward in ops.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>

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
// (ACCUM_ATTENTION=mma_dkdv32, a candidate, head sizes up to 64); kSavedDs
// (ACCUM_ATTENTION=mma_saved_ds, a candidate, head sizes up to 64: attention_saved_ds_supports):
// the dK/dV kernel runs first, reading D from `delta` (the caller has written it), and saves
// every causal 64 x 64 tile of dS^T in bf16 to `saved_ds` (attention_saved_ds_bytes); the dQ
// kernel then only multiplies dS by K. Its dK and dV are the default's bits; its dQ sums the
// same bf16 dS in the same order (the default's bits wherever the products' own summation
// order does not depend on which operand is which). Other head sizes run the default.
enum class BackwardKernels { kDefault, kNarrowDkDv, kSavedDs };
void attention_backward_mma(__nv_bfloat16* dqkv, const __nv_bfloat16* dout,
                            const __nv_bfloat16* qkv, const __nv_bfloat16* out, const float* lse,
                            float* delta, __nv_bfloat16* saved_ds, int B, int T, int C, int NH,
                            BackwardKernels kernels, cudaStream_t stream);
bool attention_saved_ds_supports(int head_size);
// Bytes of kSavedDs's dS^T tiles: B * NH * tiles (tiles + 1) / 2 tiles of 64 x 64 bf16, tiles
// = ceil(T / 64): 107 MB for GPT-2 124M at B = 8, T = 1024. Not in the memory arithmetic
// (scratch_bound): a candidate's cost until it is the default.
size_t attention_saved_ds_bytes(int B, int T, int NH);

}  // namespace accum::kernels::cuda
