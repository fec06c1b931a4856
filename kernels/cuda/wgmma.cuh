// kernels/cuda/wgmma.cuh — Hopper's warpgroup MMA (wgmma.mma_async, sm_90a): one product of a
// 64-row A and an n-column B by the 4 warps (128 threads) of a warpgroup, B read by the
// tensor cores straight from shared memory, asynchronously. For hand-written kernels whose
// A operand is in registers (attention_mma.cu's Q, P, dS) or in shared memory (the backward's
// resident rows), and whose B tiles are in shared memory without swizzling.
//
// Register layouts (PTX ISA, "Register Fragments and Shared Memory Matrix Layouts" for wgmma;
// cute's ALayout_64x16 and CLayout_64xN say the same): warp w of the warpgroup owns rows
// 16 w .. 16 w + 15, and within them
//   A (64 x 16, bf16) a[4]: mma.sync's m16n8k16 A fragment (mma.cuh) of the warp's 16 rows;
//   D (64 x n, fp32) d[n / 8][4]: mma.sync's 16 x 8 C fragment for every n8 tile j.
// So mma.cuh's acc_to_a turns two n8 tiles of D into the A of the next product, and code
// written for a warp's mma.sync accumulators (a softmax) reads wgmma's unchanged.
//
// A or B in shared memory (no swizzle): 8 x 8 "core matrices" of 8 rows of 16 contiguous bytes
// (128 bytes). A core's rows run along N and its 16 bytes along K ("K-major": B[k][n] =
// tile[n][k], e.g. K for S = Q K^T), or its rows along K and its bytes along N ("MN-major",
// trans-b: B[k][n] = tile[k][n], e.g. V for O = P V). The descriptor gives the byte distance
// between cores neighbouring along K (LBO, "leading dimension byte offset") and along N
// (SBO, "stride dimension byte offset"), for both majors (cute's make_gmma_desc for
// INTERLEAVE; bench/gpu/wgmma_probe checks it on the card). A from shared memory is K-major
// (A[m][k] = tile[m][k]: a core's rows along M, SBO between them). tests/simt emulates
// exactly this.
//
// Ordering: wgmma.fence before a batch (the registers it reads or accumulates into were
// written by ordinary instructions), commit_group after it, wait_group before any thread
// touches the batch's accumulators or A registers again or refills its B tiles, then
// fence_operands on those registers (for the compiler); and
// fence_proxy_async between ordinary writes to shared memory (stores, cp.async) and the
// wgmma that reads them (the tensor cores read through the async proxy).
#pragma once

#include <cstdint>

#include "kernels/cuda/cuda_common.cuh"

// Whether this compilation pass has wgmma: the sm_90a device pass, or the SIMT emulator.
#if defined(ACCUM_SIMT_EMULATION) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ACCUM_HAVE_WGMMA 1
#else
#define ACCUM_HAVE_WGMMA 0
#endif

namespace accum::kernels::cuda::wgmma {

// The 64-bit shared-memory matrix descriptor: start address, LBO and SBO (bytes, multiples
// of 16, below 256 KiB), no swizzle, base offset 0.
__device__ inline uint64_t descriptor(const void* smem, uint32_t lbo_bytes, uint32_t sbo_bytes) {
#if defined(ACCUM_SIMT_EMULATION)
  const uint32_t address = ::accum::simt::shared_address(smem);
#else
  const uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
#endif
  return static_cast<uint64_t>((address & 0x3FFFFu) >> 4) |
         (static_cast<uint64_t>((lbo_bytes >> 4) & 0x3FFFu) << 16) |
         (static_cast<uint64_t>((sbo_bytes >> 4) & 0x3FFFu) << 32);
}

__device__ inline void fence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) && !defined(ACCUM_SIMT_EMULATION)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

__device__ inline void commit_group() {
#if defined(ACCUM_SIMT_EMULATION)
  ::accum::simt::wgmma_commit();
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

// Returns once at most kPending of this thread's committed groups are still running.
template <int kPending>
__device__ inline void wait_group() {
#if defined(ACCUM_SIMT_EMULATION)
  ::accum::simt::wgmma_wait(kPending);
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#endif
}

// Pins registers a wgmma group reads or writes to this point of the program for the compiler:
// after wait_group, so no read of the accumulators (and no reuse of the A registers) moves
// above the wait; the tensor cores own them from issue to wait, which the compiler does not
// know (cute's warpgroup_fence_operand).
template <int N>
__device__ inline void fence_operands(float (&d)[N][4]) {
#if !defined(ACCUM_SIMT_EMULATION)
  for (int i = 0; i < N; ++i) {
    asm volatile("" : "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])::"memory");
  }
#else
  (void)d;
#endif
}
template <int N>
__device__ inline void fence_operands(uint32_t (&a)[N][4]) {
#if !defined(ACCUM_SIMT_EMULATION)
  for (int i = 0; i < N; ++i) {
    asm volatile("" : "+r"(a[i][0]), "+r"(a[i][1]), "+r"(a[i][2]), "+r"(a[i][3])::"memory");
  }
#else
  (void)a;
#endif
}

// Makes this thread's earlier ordinary writes to shared memory visible to the async proxy.
__device__ inline void fence_proxy_async() {
#if defined(ACCUM_SIMT_EMULATION)
  ::accum::simt::fence_proxy_async();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// The 32 accumulators of one thread of an m64n64 product, as asm operands %0 .. %31.
#define ACCUM_WGMMA_D64(d)                                                                      \
  "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),     \
      "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), \
      "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), \
      "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), \
      "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), \
      "+f"(d[7][2]), "+f"(d[7][3])
#define ACCUM_WGMMA_D64_REGS                                                \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"

// d (+)= a b: a 64 x 16 from registers, b 16 x 64 at `b_descriptor` (K-major, or MN-major with
// kTransB), d 64 x 64 (this thread's d[8][4]). accumulate = false writes d (scale-d = 0).
template <bool kTransB>
__device__ inline void mma_m64n64k16(float (&d)[8][4], const uint32_t (&a)[4],
                                     uint64_t b_descriptor, bool accumulate) {
#if defined(ACCUM_SIMT_EMULATION)
  ::accum::simt::wgmma_bf16(&d[0][0], 64, a, b_descriptor, kTransB, accumulate);
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " ACCUM_WGMMA_D64_REGS
      ", {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n"
      "}\n"
      : ACCUM_WGMMA_D64(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_descriptor),
        "r"(static_cast<int>(accumulate)), "n"(static_cast<int>(kTransB)));
#else
  (void)d, (void)a, (void)b_descriptor, (void)accumulate;
  __trap();  // wgmma needs sm_90a: callers check attention_wgmma_available() first
#endif
}

// The same with A from shared memory too, K-major (A[m][k] = tile[m][k]), at `a_descriptor`.
template <bool kTransB>
__device__ inline void mma_m64n64k16_ss(float (&d)[8][4], uint64_t a_descriptor,
                                        uint64_t b_descriptor, bool accumulate) {
#if defined(ACCUM_SIMT_EMULATION)
  ::accum::simt::wgmma_bf16_ss(&d[0][0], 64, a_descriptor, b_descriptor, kTransB, accumulate);
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " ACCUM_WGMMA_D64_REGS
      ", %32, %33, p, 1, 1, 0, %35;\n"
      "}\n"
      : ACCUM_WGMMA_D64(d)
      : "l"(a_descriptor), "l"(b_descriptor), "r"(static_cast<int>(accumulate)),
        "n"(static_cast<int>(kTransB)));
#else
  (void)d, (void)a_descriptor, (void)b_descriptor, (void)accumulate;
  __trap();
#endif
}

#undef ACCUM_WGMMA_D64
#undef ACCUM_WGMMA_D64_REGS

}  // namespace accum::kernels::cuda::wgmma
