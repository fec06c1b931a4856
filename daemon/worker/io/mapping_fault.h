// io/mapping_fault.h — what the worker says when a memory-mapped file shrinks under it.
//
// MappedFile maps data shards and safetensors files. If another process truncates one
// while it is mapped, the next read of a page past the new end raises SIGBUS, which by
// default kills the worker with no word (exit 135). Every MappedFile registers its
// address range here with a message written in advance, and the SIGBUS handler, which
// may only make async-signal-safe calls, finds the range the faulting address lies in,
// write(2)s that message and _exit()s with the runtime-failure code, so the supervisor
// restarts the job from its last checkpoint. A fault outside every registered range is
// a bug, not a shrunken file: the handler puts back the previous disposition and
// returns, so the fault repeats and ends the process as it would have.
//
// Header-only like mapped_file.h (the data library does not link the io library); the
// table is one inline global shared by every translation unit.
// Thread safety: register/unregister take a mutex; the handler reads without locking
// (a range is published, begin last, only after its message is complete).
#pragma once

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>

namespace accum::io {
namespace mapping_fault_internal {

constexpr int kSlots = 1024;           // data sets with more shards fall back to a generic line
constexpr size_t kMessageBytes = 768;  // long paths are cut

struct Slot {
  std::atomic<uintptr_t> begin{0};  // 0: free
  std::atomic<uintptr_t> end{0};
  char message[kMessageBytes];
  size_t length = 0;
};

inline Slot g_slots[kSlots];
inline std::mutex g_register_mutex;
inline std::atomic<int> g_exit_code{1};
inline struct sigaction g_previous {};

// write(2) all of `text` (async-signal-safe).
inline void write_all(const char* text, size_t length) {
  while (length > 0) {
    ssize_t n = ::write(STDERR_FILENO, text, length);
    if (n <= 0) return;
    text += n;
    length -= static_cast<size_t>(n);
  }
}

inline void on_sigbus(int signal, siginfo_t* info, void* context) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(info != nullptr ? info->si_addr : nullptr);
  for (Slot& slot : g_slots) {
    const uintptr_t begin = slot.begin.load(std::memory_order_acquire);
    if (begin == 0 || address < begin || address >= slot.end.load(std::memory_order_relaxed))
      continue;
    write_all(slot.message, slot.length);
    ::_exit(g_exit_code.load());
  }
  // Not a mapped file: let the previous handler (or the default action) have it.
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(signal, info, context);
    return;
  }
  ::sigaction(SIGBUS, &g_previous, nullptr);
}

}  // namespace mapping_fault_internal

// Installs the SIGBUS handler: a fault inside a registered mapping prints that
// mapping's message and exits with `exit_code`. Call once, after libraries that install
// their own SIGBUS handler (MPI_Init does), which then still get faults outside mappings.
inline void install_mapping_fault_handler(int exit_code) {
  namespace internal = mapping_fault_internal;
  internal::g_exit_code.store(exit_code);
  struct sigaction action {};
  action.sa_sigaction = internal::on_sigbus;
  action.sa_flags = SA_SIGINFO;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGBUS, &action, &internal::g_previous);
}

// Records [base, base+size) as the mapping of `path`; returns a slot for
// unregister_mapping(), or -1 when the table is full (a fault then gets no message).
inline int register_mapping(const void* base, size_t size, const std::string& path) {
  namespace internal = mapping_fault_internal;
  std::lock_guard lock(internal::g_register_mutex);
  for (int i = 0; i < internal::kSlots; ++i) {
    internal::Slot& slot = internal::g_slots[i];
    if (slot.begin.load(std::memory_order_relaxed) != 0) continue;
    const int written = std::snprintf(
        slot.message, sizeof(slot.message),
        "accum-worker: error: %s shrank while the worker had it memory-mapped (SIGBUS reading "
        "it; it held %zu bytes when opened): a data or weights file must not be truncated or "
        "rewritten while a job reads it. Exiting with code %d (runtime failure): restore the "
        "file and the job restarts from its last checkpoint\n",
        path.c_str(), size, internal::g_exit_code.load());
    slot.length =
        written < 0 ? 0 : std::min(static_cast<size_t>(written), sizeof(slot.message) - 1);
    if (slot.length > 0 && slot.message[slot.length - 1] != '\n')
      slot.message[slot.length - 1] = '\n';
    const uintptr_t begin = reinterpret_cast<uintptr_t>(base);
    slot.end.store(begin + size, std::memory_order_relaxed);
    slot.begin.store(begin, std::memory_order_release);
    return i;
  }
  return -1;
}

// Forgets a registration (before the range is unmapped). -1 is ignored.
inline void unregister_mapping(int slot) {
  if (slot < 0) return;
  namespace internal = mapping_fault_internal;
  std::lock_guard lock(internal::g_register_mutex);
  internal::g_slots[slot].begin.store(0, std::memory_order_release);
}

}  // namespace accum::io
