// tests/simt/simt.cpp — the emulator's scheduler: one fiber per CUDA thread, barriers that
// wait for every thread that must arrive, warp-synchronous exchanges (see simt.h).
#include "tests/simt/simt.h"

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tests/simt/simt_runtime.h"

// Fiber switch: saves the callee-saved registers on the current stack, stores its stack
// pointer in *from, continues on `to` (System V x86-64; no signal-mask syscall, unlike
// swapcontext, which made switching the emulator's main cost).
extern "C" void accum_simt_switch(void** from, void* to);
asm(R"(
  .text
  .globl accum_simt_switch
  .type accum_simt_switch, @function
accum_simt_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size accum_simt_switch, .-accum_simt_switch
)");

namespace accum::simt {
namespace {

constexpr int kWarp = 32;
constexpr size_t kStackBytes = 256u << 10;  // per fiber; the kernels keep < 8 KiB of locals
constexpr int kMaxThreadsPerBlock = 1024;
constexpr size_t kDefaultDynamicShared = 48u << 10;  // without cudaFuncSetAttribute
constexpr size_t kMaxDynamicShared = 227u << 10;     // sm_90's opt-in limit per block

enum class State { kRunnable, kWaiting, kDone };

struct Fiber;

struct Barrier {
  int arrived = 0;
  std::vector<Fiber*> waiters;
};

struct Fiber {
  void* sp = nullptr;  // saved stack pointer while switched out
  uint3 thread{};
  int linear = 0;  // threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)
  State state = State::kRunnable;
  const char* waiting_what = "";
  unsigned exchanges = 0;  // warp exchanges begun: picks the slot table (double buffering)
  // cp.async copies issued but not yet made: committed groups (oldest first), then the
  // copies since the last commit.
  struct AsyncCopy {
    void* dst;
    const void* src;  // nullptr: zero fill
    int bytes;
  };
  std::vector<std::vector<AsyncCopy>> async_groups;
  std::vector<AsyncCopy> async_open;
};

// Two slot tables, used alternately: a lane can only start exchange k + 2 (overwriting
// table k % 2) after every lane has arrived at exchange k + 1, i.e. finished reading k.
struct Warp {
  Barrier barrier;
  int lanes = 0;  // threads of the block in this warp (32 but for a ragged last warp)
  alignas(16) unsigned char slots[2][kWarp][kSlotBytes];
};

// Everything about the block that is running on this OS thread.
struct Block {
  const std::function<void()>* body = nullptr;
  uint3 block{};
  dim3 block_dim, grid_dim;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  Barrier block_barrier;
  int live = 0;
  Fiber* current = nullptr;
  void* scheduler_sp = nullptr;
  uint64_t serial = 0;  // distinct for every block run on this OS thread (never 0)
  std::vector<unsigned char> shared;
};

thread_local Block* t_block = nullptr;

[[noreturn]] void fail(const std::string& message);

// ACCUM_SIMT_SCHEDULE=round_robin (default) | lowest_first | highest_first.
Schedule schedule_from_environment() {
  const char* env = std::getenv("ACCUM_SIMT_SCHEDULE");
  const std::string name = env != nullptr ? env : "round_robin";
  if (name == "round_robin") return Schedule::kRoundRobin;
  if (name == "lowest_first") return Schedule::kLowestFirst;
  if (name == "highest_first") return Schedule::kHighestFirst;
  fail("ACCUM_SIMT_SCHEDULE=" + name + ": expected round_robin, lowest_first or highest_first");
}
Schedule g_schedule = schedule_from_environment();

// ACCUM_SIMT_CP_ASYNC=at_wait (default): a cp.async copy lands when a wait covers it, so a
// read before the wait sees old bytes; at_issue: it lands at once, so a copy into a buffer
// that another warp is still reading (a missing barrier before the refill) corrupts it.
bool cp_async_at_issue_from_environment() {
  const char* env = std::getenv("ACCUM_SIMT_CP_ASYNC");
  const std::string name = env != nullptr ? env : "at_wait";
  if (name == "at_wait") return false;
  if (name == "at_issue") return true;
  fail("ACCUM_SIMT_CP_ASYNC=" + name + ": expected at_wait or at_issue");
}
bool g_cp_async_at_issue = cp_async_at_issue_from_environment();

// Fiber stacks, reused from launch to launch.
std::vector<std::unique_ptr<unsigned char[]>>& stacks(size_t count) {
  thread_local std::vector<std::unique_ptr<unsigned char[]>> pool;
  while (pool.size() < count) pool.emplace_back(new unsigned char[kStackBytes]);
  return pool;
}

std::mutex g_attribute_mutex;
std::map<const void*, size_t>& dynamic_shared_limits() {
  static std::map<const void*, size_t> limits;
  return limits;
}

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "SIMT emulator: %s\n", message.c_str());
  std::fflush(stderr);
  std::abort();
}

Block& block() {
  if (t_block == nullptr || t_block->current == nullptr) {
    fail("a device function ran outside a kernel launch");
  }
  return *t_block;
}

void yield_to_scheduler() {
  Block& b = *t_block;
  accum_simt_switch(&b.current->sp, b.scheduler_sp);
}

void release(Barrier& barrier) {
  barrier.arrived = 0;
  for (Fiber* fiber : barrier.waiters) fiber->state = State::kRunnable;
  barrier.waiters.clear();
}

// The calling thread arrives at `barrier`, which opens when `expected` threads have.
void arrive_and_wait(Barrier& barrier, int expected, const char* what) {
  Block& b = block();
  if (++barrier.arrived >= expected) {
    release(barrier);
    return;
  }
  b.current->state = State::kWaiting;
  b.current->waiting_what = what;
  barrier.waiters.push_back(b.current);
  yield_to_scheduler();
}

Warp& my_warp() {
  Block& b = block();
  return b.warps[b.current->linear / kWarp];
}

[[noreturn]] void fiber_main() {
  Block& b = *t_block;
  (*b.body)();
  if (!b.current->async_groups.empty() || !b.current->async_open.empty()) {
    fail("a thread ended with cp.async copies it never waited for (cp.async.wait_group)");
  }
  b.current->state = State::kDone;
  --b.live;
  // Exited threads no longer count at __syncthreads (as on sm_70 and later).
  if (b.block_barrier.arrived > 0 && b.block_barrier.arrived >= b.live) release(b.block_barrier);
  yield_to_scheduler();
  fail("a finished thread was resumed");
}

// A new fiber's stack: six zeroed callee-saved registers, then fiber_main as the return
// address accum_simt_switch's `ret` takes (entered with the ABI's call alignment).
void* initial_stack(unsigned char* stack, size_t bytes) {
  auto top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15};
  auto* slot = reinterpret_cast<uintptr_t*>(top);
  *--slot = 0;  // fiber_main's own return address: never used
  *--slot = reinterpret_cast<uintptr_t>(&fiber_main);
  for (int reg = 0; reg < 6; ++reg) *--slot = 0;
  return slot;
}

std::string describe_deadlock(const Block& b) {
  std::string message = "deadlock in block (" + std::to_string(b.block.x) + "," +
                        std::to_string(b.block.y) + "," + std::to_string(b.block.z) +
                        "): no thread can run;";
  int shown = 0;
  for (const Fiber& fiber : b.fibers) {
    if (fiber.state != State::kWaiting) continue;
    if (shown++ < 8) {
      message +=
          " thread " + std::to_string(fiber.linear) + " waits at " + fiber.waiting_what + ";";
    }
  }
  const int done = static_cast<int>(b.fibers.size()) - b.live;
  message += " " + std::to_string(done) + " threads have exited (a warp-synchronous op needs " +
             "every lane of its warp; __syncthreads every live thread)";
  return message;
}

void run_block(Block& b) {
  thread_local uint64_t blocks_run = 0;
  b.serial = ++blocks_run;
  const int threads = static_cast<int>(b.block_dim.x * b.block_dim.y * b.block_dim.z);
  auto& pool = stacks(threads);
  b.fibers.assign(threads, Fiber{});
  b.warps.resize((threads + kWarp - 1) / kWarp);  // slot tables need no clearing
  for (int w = 0; w < static_cast<int>(b.warps.size()); ++w) {
    b.warps[w].barrier = Barrier{};
    b.warps[w].lanes = std::min(kWarp, threads - w * kWarp);
  }
  b.block_barrier = Barrier{};
  b.live = threads;
  std::fill(b.shared.begin(), b.shared.end(), 0xFF);  // unwritten shared memory reads as NaN
  for (int i = 0; i < threads; ++i) {
    Fiber& fiber = b.fibers[i];
    fiber.linear = i;
    fiber.thread = uint3{i % b.block_dim.x, (i / b.block_dim.x) % b.block_dim.y,
                         i / (b.block_dim.x * b.block_dim.y)};
    fiber.sp = initial_stack(pool[i].get(), kStackBytes);
  }
  auto resume = [&](Fiber& fiber) {
    b.current = &fiber;
    accum_simt_switch(&b.scheduler_sp, fiber.sp);
    b.current = nullptr;
  };
  while (b.live > 0) {
    bool progressed = false;
    if (g_schedule == Schedule::kRoundRobin) {
      for (Fiber& fiber : b.fibers) {
        if (fiber.state != State::kRunnable) continue;
        progressed = true;
        resume(fiber);
      }
    } else {
      const bool lowest = g_schedule == Schedule::kLowestFirst;
      for (int k = 0; k < threads; ++k) {
        Fiber& fiber = b.fibers[lowest ? k : threads - 1 - k];
        if (fiber.state != State::kRunnable) continue;
        progressed = true;
        resume(fiber);
        break;  // rescan from the preferred end
      }
    }
    if (!progressed) fail(describe_deadlock(b));
  }
}

std::string dims(const dim3& d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}

}  // namespace

void set_schedule(Schedule schedule) { g_schedule = schedule; }
Schedule schedule() { return g_schedule; }

void set_dynamic_shared_limit(const void* kernel, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_attribute_mutex);
  dynamic_shared_limits()[kernel] = bytes;
}
size_t max_dynamic_shared_opt_in() { return kMaxDynamicShared; }

void launch_kernel(const LaunchConfig& config, const void* kernel,
                   const std::function<void()>& body) {
  const dim3& g = config.grid;
  const dim3& bd = config.block;
  const uint64_t threads = uint64_t(bd.x) * bd.y * bd.z;
  if (threads == 0 || threads > kMaxThreadsPerBlock || bd.z > 64 || g.x == 0 || g.y == 0 ||
      g.z == 0 || g.y > 65535 || g.z > 65535) {
    set_launch_error(cudaErrorInvalidConfiguration,
                     "grid " + dims(g) + " x block " + dims(bd) + " is not a valid launch");
    return;
  }
  size_t limit = kDefaultDynamicShared;
  {
    std::lock_guard<std::mutex> lock(g_attribute_mutex);
    auto found = dynamic_shared_limits().find(kernel);
    if (found != dynamic_shared_limits().end()) limit = found->second;
  }
  if (config.shared_bytes > limit) {
    set_launch_error(cudaErrorInvalidValue,
                     std::to_string(config.shared_bytes) + " bytes of dynamic shared memory, " +
                         "over the kernel's limit of " + std::to_string(limit) +
                         " (cudaFuncSetAttribute raises it up to " +
                         std::to_string(kMaxDynamicShared) + ")");
    return;
  }
  if (t_block != nullptr) fail("a kernel launched from inside a kernel");
  check_stream(config.stream);
  if (capture_if_capturing(config.stream,
                           [config, kernel, body] { launch_kernel(config, kernel, body); })) {
    return;
  }
  Block b;
  b.body = &body;
  b.block_dim = bd;
  b.grid_dim = g;
  b.shared.resize(config.shared_bytes);
  t_block = &b;
  for (unsigned z = 0; z < g.z; ++z) {
    for (unsigned y = 0; y < g.y; ++y) {
      for (unsigned x = 0; x < g.x; ++x) {
        b.block = uint3{x, y, z};
        run_block(b);
      }
    }
  }
  t_block = nullptr;
  check_guards();  // the kernel wrote nothing past the end of a buffer
}

const uint3& thread_idx() { return block().current->thread; }
const uint3& block_idx() { return block().block; }
const dim3& block_dim() { return block().block_dim; }
const dim3& grid_dim() { return block().grid_dim; }

unsigned char* dynamic_shared() {
  Block& b = block();
  return b.shared.empty() ? nullptr : b.shared.data();
}

void fresh_shared(void* array, size_t bytes) {
  thread_local std::map<void*, uint64_t> poisoned_in;  // array -> block serial
  uint64_t& serial = poisoned_in[array];
  if (serial == block().serial) return;
  serial = block().serial;
  std::memset(array, 0xFF, bytes);
}

void sync_block() {
  Block& b = block();
  arrive_and_wait(b.block_barrier, b.live, "__syncthreads");
}

void trap() { fail("__trap() in a kernel"); }

int lane_id() { return block().current->linear % kWarp; }

const unsigned char* exchange_begin(const void* value, size_t bytes) {
  Warp& warp = my_warp();
  if (warp.lanes != kWarp) fail("a warp-synchronous op in a warp of fewer than 32 threads");
  unsigned char(&table)[kWarp][kSlotBytes] = warp.slots[block().current->exchanges % 2];
  std::memcpy(table[lane_id()], value, bytes);
  arrive_and_wait(warp.barrier, kWarp, "a warp-synchronous op (shfl / mma)");
  return &table[0][0];
}

void exchange_end() { ++block().current->exchanges; }

namespace {

float bf16_bits_to_float(uint32_t bits16) {
  const uint32_t bits = bits16 << 16;
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// Element `half` (0: low 16 bits, 1: high) of a register.
float half_of(uint32_t reg, int half) { return bf16_bits_to_float((reg >> (16 * half)) & 0xffffu); }

struct MmaOperands {
  uint32_t a[4];
  uint32_t b[2];
};

}  // namespace

namespace {

void land(const Fiber::AsyncCopy& copy) {
  if (copy.src == nullptr) {
    std::memset(copy.dst, 0, copy.bytes);
  } else {
    std::memcpy(copy.dst, copy.src, copy.bytes);
  }
}

}  // namespace

void check_vector_access(const void* address, int bytes) {
  if ((reinterpret_cast<uintptr_t>(address) & (static_cast<uintptr_t>(bytes) - 1)) != 0) {
    fail("a " + std::to_string(bytes) +
         "-byte vector access at an address not aligned to its size (a GPU faults: misaligned "
         "address)");
  }
}

void cp_async(void* shared_dst, const void* global_src, int bytes, bool zero_fill) {
  if (bytes != 4 && bytes != 8 && bytes != 16) fail("cp.async: a size other than 4, 8, 16");
  const uintptr_t mask = static_cast<uintptr_t>(bytes) - 1;
  if ((reinterpret_cast<uintptr_t>(shared_dst) & mask) != 0 ||
      (!zero_fill && (reinterpret_cast<uintptr_t>(global_src) & mask) != 0)) {
    fail("cp.async: an address not aligned to the copy's size");
  }
  const Fiber::AsyncCopy copy{shared_dst, zero_fill ? nullptr : global_src, bytes};
  if (g_cp_async_at_issue) {
    land(copy);
    return;
  }
  block().current->async_open.push_back(copy);
}

void cp_async_commit() {
  Fiber& f = *block().current;
  f.async_groups.push_back(std::move(f.async_open));
  f.async_open.clear();
}

void cp_async_wait(int pending_allowed) {
  Fiber& f = *block().current;
  while (static_cast<int>(f.async_groups.size()) > pending_allowed) {
    for (const Fiber::AsyncCopy& copy : f.async_groups.front()) land(copy);
    f.async_groups.erase(f.async_groups.begin());
  }
}

void ldmatrix_x4_b16(uint32_t (&r)[4], const void* row, bool trans) {
  if ((reinterpret_cast<uintptr_t>(row) & 15u) != 0)
    fail("ldmatrix: a row address not 16-byte aligned");
  const unsigned char* table = exchange_begin(&row, sizeof(row));
  auto row_of = [&](int lane) {
    const uint16_t* p;
    std::memcpy(&p, table + lane * kSlotBytes, sizeof(p));
    return p;
  };
  const int lane = lane_id(), g = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    uint32_t lo, hi;
    if (trans) {  // column g of matrix i: rows 2t and 2t + 1
      lo = row_of(8 * i + 2 * t)[g];
      hi = row_of(8 * i + 2 * t + 1)[g];
    } else {  // row g of matrix i: elements 2t and 2t + 1
      lo = row_of(8 * i + g)[2 * t];
      hi = row_of(8 * i + g)[2 * t + 1];
    }
    r[i] = lo | (hi << 16);
  }
  exchange_end();
}

// PTX ISA, "Matrix Fragments for mma.m16n8k16" (.bf16), lane = 4 g + t:
//   A (16 x 16): register r of lane (g, t) holds A[g + 8 (r & 1)][2 t + 8 (r >> 1) + {0, 1}]
//   B (16 x 8):  register r holds B[2 t + 8 r + {0, 1}][g]
//   C/D (16 x 8, f32): element e holds D[g + 8 (e >> 1)][2 t + (e & 1)]
void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  MmaOperands mine;
  std::memcpy(mine.a, a, sizeof(mine.a));
  std::memcpy(mine.b, b, sizeof(mine.b));
  const unsigned char* table = exchange_begin(&mine, sizeof(mine));
  auto operands = [&](int lane) {
    return reinterpret_cast<const MmaOperands*>(table + lane * kSlotBytes);
  };
  const int lane = lane_id(), g = lane / 4, t = lane % 4;
  // This lane's outputs need A's rows g and g + 8 and B's columns 2t and 2t + 1.
  float a_rows[2][16], b_cols[2][16];
  for (int k = 0; k < 16; ++k) {
    const int holder = (k % 8) / 2, half = k % 2, k_hi = k >= 8 ? 1 : 0;
    for (int r = 0; r < 2; ++r) {  // row g + 8 r: lane 4 g + holder, register r + 2 k_hi
      a_rows[r][k] = half_of(operands(4 * g + holder)->a[r + 2 * k_hi], half);
    }
    for (int c = 0; c < 2; ++c) {  // column 2t + c: lane 4 (2t + c) + holder, register k_hi
      b_cols[c][k] = half_of(operands(4 * (2 * t + c) + holder)->b[k_hi], half);
    }
  }
  exchange_end();
  for (int e = 0; e < 4; ++e) {
    float sum = 0.f;
    for (int k = 0; k < 16; ++k) sum += a_rows[e >> 1][k] * b_cols[e & 1][k];
    d[e] += sum;
  }
}

}  // namespace accum::simt
