// tests/simt/simt.h — a SIMT emulator that runs kernels/cuda's kernels, unchanged, on the
// CPU, so the CUDA back end's index arithmetic, fragment layouts, barriers and shuffles are
// exercised by every CI run on machines without a GPU (ctest label `simt`).
//
// How: every CUDA thread of a block is a fiber (ucontext) on the calling OS thread; a fiber
// runs until it reaches a block barrier (__syncthreads) or a warp-synchronous operation
// (__shfl_xor_sync, mma.sync), where it waits until every thread that must arrive has
// arrived. Blocks run one after another. The kernels' sources are compiled by g++ after
// tests/simt/cu_to_cpp.py rewrites each `k<<<grid, block, smem, stream>>>(args)` into
// `launch(...)`, with tests/simt/prelude.h force-included (threadIdx & co., __shared__).
//
// What it checks beyond the arithmetic: launch limits (threads per block, grid size, the
// dynamic shared memory opt-in of cudaFuncSetAttribute), barriers every live thread reaches
// (a deadlock is reported with the waiting threads), full warps at warp-synchronous ops,
// shared memory poisoned (0xFF: NaN) for every block, and schedules that let one
// warp run ahead of the others (set_schedule), so a missing barrier shows up as different
// bits.
// What it cannot check: timing, occupancy, register pressure, memory coalescing, the real
// tensor cores' internal rounding (products are summed in fp32 here, in k order), and the
// fast-math intrinsics' error (__expf runs as expf).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>

namespace accum::simt {

struct LaunchConfig {
  dim3 grid;
  dim3 block;
  size_t shared_bytes = 0;
  cudaStream_t stream = nullptr;
};

// Which runnable thread of a block the scheduler resumes next:
//   kRoundRobin:   every runnable thread in turn, warps advance roughly together;
//   kLowestFirst:  always the lowest-numbered one: warp 0 runs ahead as far as barriers
//                  let it, then warp 1, ...;
//   kHighestFirst: the same from the last warp down.
// A correct kernel gives the same bits under all three; a missing __syncthreads (a read
// of shared memory another warp has not written yet, or has already overwritten) does not.
// The environment's ACCUM_SIMT_SCHEDULE (round_robin, lowest_first, highest_first) picks
// the schedule a process starts with.
enum class Schedule { kRoundRobin, kLowestFirst, kHighestFirst };
void set_schedule(Schedule schedule);
Schedule schedule();

// Runs `body` once for every thread of every block of `config`. `kernel` identifies the
// kernel for its cudaFuncSetAttribute limits. A bad configuration sets the error that
// cudaGetLastError() returns (as a real launch does) and runs nothing.
void launch_kernel(const LaunchConfig& config, const void* kernel,
                   const std::function<void()>& body);

template <typename... Params>
void launch(const LaunchConfig& config, void (*kernel)(Params...),
            const std::function<void()>& body) {
  launch_kernel(config, reinterpret_cast<const void*>(kernel), body);
}
inline void launch(const LaunchConfig& config, std::nullptr_t, const std::function<void()>& body) {
  launch_kernel(config, nullptr, body);
}

// The running thread's coordinates (threadIdx, blockIdx, blockDim, gridDim).
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();

void sync_block();  // __syncthreads
// Fills a static __shared__ array with 0xFF the first time a thread of a new block
// reaches its declaration (cu_to_cpp.py adds the call after it).
void fresh_shared(void* array, size_t bytes);
unsigned char* dynamic_shared();  // extern __shared__ x[]
[[noreturn]] void trap();         // __trap

// Warp-synchronous exchange: every lane of the calling thread's warp publishes up to
// kSlotBytes and, once all lanes have, reads the table of all lanes' slots; the exchange
// ends (the table may be overwritten) when every lane has called exchange_end().
constexpr size_t kSlotBytes = 64;
const unsigned char* exchange_begin(const void* value, size_t bytes);
void exchange_end();
int lane_id();

// __shfl_sync: the value of lane `src_lane` (mod 32).
template <typename T>
T shfl(unsigned mask, T value, int src_lane) {
  static_assert(sizeof(T) <= kSlotBytes);
  if (mask != 0xffffffffu) trap();  // the kernels use full warps only
  const unsigned char* table = exchange_begin(&value, sizeof(T));
  T result;
  std::memcpy(&result, table + (src_lane & 31) * kSlotBytes, sizeof(T));
  exchange_end();
  return result;
}

template <typename T>
T shfl_xor(unsigned mask, T value, int lane_mask) {
  return shfl(mask, value, lane_id() ^ lane_mask);
}

// A vector load or store of `bytes` (8 or 16: ld/st .v2/.v4) at `address`: a GPU faults
// ("misaligned address") unless the address is aligned to the size, x86 does not, so the
// kernels' vector accesses (kernels/cuda/cuda_common.cuh's ACCUM_VECTOR_ACCESS) are checked here.
void check_vector_access(const void* address, int bytes);

// cp.async.{cg,ca}.shared.global of `bytes` (4, 8 or 16; both addresses aligned to it;
// zero_fill: src-size 0, `bytes` zero bytes), then cp.async.commit_group and
// cp.async.wait_group N. A copy is made only when a wait covers its group, never earlier,
// so a read of the destination before the wait sees the old (poisoned) bytes, as it may on
// a GPU; a thread that ends with copies pending fails. With ACCUM_SIMT_CP_ASYNC=at_issue
// copies land at once instead: a refill of a buffer that another warp still reads then
// corrupts it.
void cp_async(void* shared_dst, const void* global_src, int bytes, bool zero_fill);
inline void cp_async16(void* shared_dst, const void* global_src, bool zero_fill) {
  cp_async(shared_dst, global_src, 16, zero_fill);
}
void cp_async_commit();
void cp_async_wait(int pending_allowed);

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8 i .. 8 i + 7 give the
// addresses of rows 0..7 (16 bytes each, 16-byte aligned) of 8x8 matrix i; register i of
// lane 4 g + t gets row g, elements 2t, 2t + 1 of matrix i (with trans: column g).
void ldmatrix_x4_b16(uint32_t (&r)[4], const void* row, bool trans);

// d += A B for one warp-wide mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32, operands in the
// PTX ISA fragment layouts (kernels/cuda/mma.cuh describes them).
void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);

}  // namespace accum::simt
