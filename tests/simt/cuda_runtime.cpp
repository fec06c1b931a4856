// tests/simt/cuda_runtime.cpp — the part of the CUDA runtime API the CUDA back end calls,
// implemented for the SIMT emulator (simt.h) in place of libcudart: one device whose
// memory is host memory, streams on which every operation has finished when it returns
// (kernels run at launch), and the runtime's checks: pointers handed to memcpy / memset /
// cudaFree must be device allocations, launch errors are reported by cudaGetLastError.
//
// Device memory: ACCUM_SIMT_DEVICE_BYTES (default 80 GiB) is the device's size; allocations
// beyond it fail with cudaErrorMemoryAllocation, so out-of-memory paths can be tested;
// ACCUM_SIMT_MEMINFO_OVERSTATE makes cudaMemGetInfo report that many bytes more free.
// ACCUM_SIMT_DEVICES (default 1) devices are visible; they share that memory (a process
// uses one). Events complete when recorded. What a real host would wait for (syncs,
// device->host copies, copies from pageable memory) is counted: host_waits().
// New allocations are filled with 0xFF bytes (NaN as bf16 or fp32): a read of memory
// nobody wrote shows up. Behind each allocation's end lie guard bytes (its padding to 256
// bytes, and 256 more) that must stay 0xFF: they are checked after every kernel and
// cuBLASLt call, at every synchronization and at cudaFree, so a write past the end of a
// buffer is reported with the buffer's size and the offset written.
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "tests/simt/simt_runtime.h"

namespace accum::simt {
namespace {

constexpr size_t kAlignment = 256;  // cudaMalloc's guarantee
constexpr size_t kGuardBytes = 256;

size_t padded(size_t size) { return (size + kAlignment - 1) / kAlignment * kAlignment; }

struct Device {
  std::mutex mutex;
  std::map<uintptr_t, size_t> allocations;  // start -> bytes
  size_t used = 0;
  std::set<cudaStream_t> streams;
  // Each event and when it was last recorded (every stream's work is done by then).
  std::map<cudaEvent_t, std::chrono::steady_clock::time_point> events;
  std::map<uintptr_t, size_t> pinned;  // cudaMallocHost: start -> bytes
  // hang_stream: streams whose work never finishes, and the events recorded on them since.
  std::set<cudaStream_t> hung;
  std::set<cudaEvent_t> pending;
  HostWaits waits;
  // The stream being captured (nullptr: none) and what it recorded so far.
  cudaStream_t capturing = nullptr;
  bool capture_active = false;
  std::vector<std::function<void()>> captured;
  // Streams that joined the capture (they waited for an event the capture recorded): their
  // work is held back and goes into the graph where the capturing stream waits for it (a
  // join), so in the graph it runs as late as the graph allows. A missing join then shows:
  // the capturing stream's later work overwrites what the held-back work reads.
  struct Member {
    std::vector<std::function<void()>> held;  // queued since the capture began
    size_t joined = 0;                        // how many of `held` are in the graph
    long activity = 0;                        // ops and waits so far
    long joined_activity = 0;                 // of them, what a join covered
  };
  std::map<cudaStream_t, Member> members;
  // Events recorded during the capture: the stream, and for a member, how much of its work
  // (held ops, activity) lies before the event.
  struct CapturedEvent {
    cudaStream_t stream;
    size_t held;
    long activity;
  };
  std::map<cudaEvent_t, CapturedEvent> captured_events;
  // Events whose last record was in a capture (this one or an earlier one): outside a
  // capture they may not be queried, synchronized or waited for (cudaErrorCapturedEvent).
  std::set<cudaEvent_t> last_recorded_in_capture;
};

Device& device() {
  static Device d;
  return d;
}

size_t device_bytes() {
  static const size_t bytes = [] {
    const char* env = std::getenv("ACCUM_SIMT_DEVICE_BYTES");
    return env != nullptr ? static_cast<size_t>(std::strtoull(env, nullptr, 10))
                          : (size_t{80} << 30);
  }();
  return bytes;
}

int device_count() {
  static const int count = [] {
    const char* env = std::getenv("ACCUM_SIMT_DEVICES");
    return env != nullptr ? std::atoi(env) : 1;
  }();
  return count;
}

thread_local cudaError_t t_last_error = cudaSuccess;
thread_local int t_device = 0;

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "SIMT emulator (CUDA runtime): %s\n", message.c_str());
  std::fflush(stderr);
  std::abort();
}

cudaError_t record(cudaError_t error) {
  if (error != cudaSuccess) t_last_error = error;
  return error;
}

}  // namespace

void set_launch_error(cudaError_t error, const std::string& why) {
  std::fprintf(stderr, "SIMT emulator: launch failed: %s\n", why.c_str());
  t_last_error = error;
}

void check_stream(cudaStream_t stream) {
  if (stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread) return;
  Device& d = device();
  std::lock_guard<std::mutex> lock(d.mutex);
  if (d.streams.count(stream) == 0) fail("work queued on a stream that does not exist");
}

void hang_stream(cudaStream_t stream) {
  Device& d = device();
  std::lock_guard<std::mutex> lock(d.mutex);
  d.hung.insert(stream);
}

void release_hung_streams() {
  Device& d = device();
  std::lock_guard<std::mutex> lock(d.mutex);
  if (d.hung.empty()) return;
  std::fprintf(stderr, "SIMT emulator (CUDA runtime): %zu hung stream(s) released\n",
               d.hung.size());
  d.hung.clear();
  d.pending.clear();
}

void check_device_range(const void* ptr, size_t bytes, const char* what) {
  Device& d = device();
  std::lock_guard<std::mutex> lock(d.mutex);
  const auto address = reinterpret_cast<uintptr_t>(ptr);
  auto it = d.allocations.upper_bound(address);
  if (it == d.allocations.begin()) {
    fail(std::string(what) + ": pointer is not device memory");
  }
  --it;
  if (address + bytes > it->first + it->second) {
    fail(std::string(what) + ": " + std::to_string(bytes) + " bytes at offset " +
         std::to_string(address - it->first) + " run past the end of a " +
         std::to_string(it->second) + "-byte allocation");
  }
}

namespace {

// REQUIRES: the device mutex is held.
void check_guard_locked(uintptr_t start, size_t size) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(start);
  const size_t end = padded(size) + kGuardBytes;
  for (size_t i = size; i < end; ++i) {
    if (bytes[i] != 0xFF) {
      fail("device memory written past the end of a " + std::to_string(size) +
           "-byte allocation, at byte " + std::to_string(i) + " (a kernel or cuBLASLt call " +
           "since the last check wrote out of bounds)");
    }
  }
}

}  // namespace

void check_guards() {
  Device& d = device();
  std::lock_guard<std::mutex> lock(d.mutex);
  for (const auto& [start, size] : d.allocations) check_guard_locked(start, size);
}

bool capture_if_capturing(cudaStream_t stream, std::function<void()> op) {
  Device& d = device();
  std::lock_guard<std::mutex> lock(d.mutex);
  if (!d.capture_active) return false;
  if (stream == d.capturing) {
    d.captured.push_back(std::move(op));
    return true;
  }
  const auto member = d.members.find(stream);
  if (member == d.members.end()) {
    fail(
        "work queued on a stream that is not part of the capture while a stream captures "
        "(a stream joins a capture by waiting for an event the capture recorded)");
  }
  member->second.held.push_back(std::move(op));
  ++member->second.activity;
  return true;
}

void refuse_while_capturing(const char* what) {
  Device& d = device();
  std::lock_guard<std::mutex> lock(d.mutex);
  if (d.capture_active) {
    fail(std::string(what) +
         " while a stream captures (a CUDA graph cannot hold it; a real "
         "capture fails with cudaErrorStreamCaptureUnsupported)");
  }
}

HostWaits host_waits() {
  Device& d = device();
  std::lock_guard<std::mutex> lock(d.mutex);
  return d.waits;
}

}  // namespace accum::simt

using accum::simt::check_device_range;
using accum::simt::check_stream;

// No profiler attaches to the emulator: the capture range calls do nothing.
cudaError_t cudaProfilerStart() { return cudaSuccess; }
cudaError_t cudaProfilerStop() { return cudaSuccess; }

cudaError_t cudaGetDeviceCount(int* count) {
  *count = accum::simt::device_count();
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= accum::simt::device_count()) {
    return accum::simt::record(cudaErrorInvalidDevice);
  }
  accum::simt::t_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  *device = accum::simt::t_device;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device < 0 || device >= accum::simt::device_count()) {
    return accum::simt::record(cudaErrorInvalidDevice);
  }
  std::memset(prop, 0, sizeof(*prop));
  std::snprintf(prop->name, sizeof(prop->name), "SIMT emulator on the CPU (not a GPU)");
  prop->totalGlobalMem = accum::simt::device_bytes();
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 1;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->sharedMemPerBlockOptin = accum::simt::max_dynamic_shared_opt_in();
  return cudaSuccess;
}

// Not a GPU: no PCI bus id (gpt2_bench's clock sampler then reports no clocks).
cudaError_t cudaDeviceGetPCIBusId(char* /*bus_id*/, int /*len*/, int device) {
  if (device < 0 || device >= accum::simt::device_count()) {
    return accum::simt::record(cudaErrorInvalidDevice);
  }
  return accum::simt::record(cudaErrorNotSupported);
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device < 0 || device >= accum::simt::device_count()) {
    return accum::simt::record(cudaErrorInvalidDevice);
  }
  switch (attr) {
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = static_cast<int>(accum::simt::max_dynamic_shared_opt_in());
      return cudaSuccess;
    case cudaDevAttrMultiProcessorCount:
      *value = 1;
      return cudaSuccess;
    default:  // not emulated: say so rather than invent a value
      return accum::simt::record(cudaErrorInvalidValue);
  }
}

cudaError_t cudaMalloc(void** ptr, size_t size) {
  accum::simt::refuse_while_capturing("cudaMalloc");
  auto& d = accum::simt::device();
  const size_t rounded = accum::simt::padded(size);
  {
    std::lock_guard<std::mutex> lock(d.mutex);
    if (d.used + rounded > accum::simt::device_bytes()) {
      *ptr = nullptr;
      return accum::simt::record(cudaErrorMemoryAllocation);
    }
    d.used += rounded;
  }
  const size_t with_guard = rounded + accum::simt::kGuardBytes;
  void* memory = std::aligned_alloc(accum::simt::kAlignment, with_guard);
  if (memory == nullptr) accum::simt::fail("host memory exhausted");
  std::memset(memory, 0xFF, with_guard);
  std::lock_guard<std::mutex> lock(d.mutex);
  d.allocations[reinterpret_cast<uintptr_t>(memory)] = size;
  *ptr = memory;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  accum::simt::refuse_while_capturing("cudaFree");
  if (ptr == nullptr) return cudaSuccess;
  auto& d = accum::simt::device();
  {
    std::lock_guard<std::mutex> lock(d.mutex);
    auto found = d.allocations.find(reinterpret_cast<uintptr_t>(ptr));
    if (found == d.allocations.end()) {
      accum::simt::fail("cudaFree of a pointer cudaMalloc did not return");
    }
    accum::simt::check_guard_locked(found->first, found->second);
    d.used -= accum::simt::padded(found->second);
    d.allocations.erase(found);
  }
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attributes, const void* ptr) {
  std::memset(attributes, 0, sizeof(*attributes));
  auto& d = accum::simt::device();
  std::lock_guard<std::mutex> lock(d.mutex);
  const auto address = reinterpret_cast<uintptr_t>(ptr);
  auto it = d.allocations.upper_bound(address);
  const bool device =
      it != d.allocations.begin() && address < std::prev(it)->first + std::prev(it)->second;
  attributes->type = device ? cudaMemoryTypeDevice : cudaMemoryTypeUnregistered;
  attributes->device = accum::simt::t_device;
  if (device) attributes->devicePointer = const_cast<void*>(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  auto& d = accum::simt::device();
  std::lock_guard<std::mutex> lock(d.mutex);
  *total_bytes = accum::simt::device_bytes();
  *free_bytes = *total_bytes - d.used;
  // A device whose report is optimistic (a real one's allocator rounds up and fragments):
  // ACCUM_SIMT_MEMINFO_OVERSTATE bytes more free than an allocation can get.
  if (const char* over = std::getenv("ACCUM_SIMT_MEMINFO_OVERSTATE")) {
    *free_bytes = std::min<size_t>(*total_bytes, *free_bytes + std::strtoull(over, nullptr, 10));
  }
  return cudaSuccess;
}

// Pinned host memory is plain host memory here (copies complete when queued).
cudaError_t cudaMallocHost(void** ptr, size_t size) {
  *ptr = std::malloc(size == 0 ? 1 : size);
  if (*ptr == nullptr) return accum::simt::record(cudaErrorMemoryAllocation);
  auto& d = accum::simt::device();
  std::lock_guard<std::mutex> lock(d.mutex);
  d.pinned[reinterpret_cast<uintptr_t>(*ptr)] = size;
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void* ptr) {
  {
    auto& d = accum::simt::device();
    std::lock_guard<std::mutex> lock(d.mutex);
    d.pinned.erase(reinterpret_cast<uintptr_t>(ptr));
  }
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  check_stream(stream);
  if (count == 0) return cudaSuccess;
  if (kind == cudaMemcpyDeviceToDevice && accum::simt::capture_if_capturing(stream, [=] {
        (void)cudaMemcpyAsync(dst, src, count, kind, stream);
      })) {
    return cudaSuccess;
  }
  // The host's side of a copy is read or written when the graph runs: not emulated.
  accum::simt::refuse_while_capturing("a copy to or from host memory");
  if (kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice) {
    check_device_range(dst, count, "cudaMemcpy destination");
  }
  if (kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice) {
    check_device_range(src, count, "cudaMemcpy source");
  }
  {
    auto& d = accum::simt::device();
    std::lock_guard<std::mutex> lock(d.mutex);
    if (kind == cudaMemcpyDeviceToHost) ++d.waits.device_to_host;
    if (kind == cudaMemcpyHostToDevice) {
      const auto address = reinterpret_cast<uintptr_t>(src);
      auto block = d.pinned.upper_bound(address);
      const bool pinned = block != d.pinned.begin() &&
                          address + count <= std::prev(block)->first + std::prev(block)->second;
      if (!pinned) ++d.waits.pageable_to_device;
    }
  }
  std::memmove(dst, src, count);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  return cudaMemcpyAsync(dst, src, count, kind, nullptr);
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream) {
  check_stream(stream);
  if (count == 0) return cudaSuccess;
  if (accum::simt::capture_if_capturing(
          stream, [=] { (void)cudaMemsetAsync(ptr, value, count, stream); })) {
    return cudaSuccess;
  }
  check_device_range(ptr, count, "cudaMemset");
  std::memset(ptr, value, count);
  return cudaSuccess;
}

cudaError_t cudaMemset(void* ptr, int value, size_t count) {
  return cudaMemsetAsync(ptr, value, count, nullptr);
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int /*flags*/) {
  *event = reinterpret_cast<cudaEvent_t>(new char);
  auto& d = accum::simt::device();
  std::lock_guard<std::mutex> lock(d.mutex);
  d.events.emplace(*event, std::chrono::steady_clock::time_point{});
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, 0); }

namespace {
// cudaSuccess for a complete event; for one recorded on a hung stream, cudaErrorNotReady, or,
// with `host_waits` (the caller would block until it completes), the process aborts.
cudaError_t check_event(cudaEvent_t event, const char* host_waits = nullptr) {
  auto& d = accum::simt::device();
  std::lock_guard<std::mutex> lock(d.mutex);
  if (d.events.count(event) == 0) return accum::simt::record(cudaErrorInvalidResourceHandle);
  if (d.last_recorded_in_capture.count(event) != 0) {
    return accum::simt::record(cudaErrorCapturedEvent);
  }
  if (d.pending.count(event) == 0) return cudaSuccess;
  if (host_waits != nullptr) {
    accum::simt::fail(std::string(host_waits) +
                      " on an event after a collective that never completes: it would wait for "
                      "ever");
  }
  return cudaErrorNotReady;
}
}  // namespace

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  check_stream(stream);
  auto& d = accum::simt::device();
  std::lock_guard<std::mutex> lock(d.mutex);
  const auto found = d.events.find(event);
  if (found == d.events.end()) return accum::simt::record(cudaErrorInvalidResourceHandle);
  if (d.capture_active) {  // a node of the graph: the point in its stream's work
    d.last_recorded_in_capture.insert(event);
    if (stream == d.capturing) {
      d.captured_events[event] = {stream, 0, 0};
      return cudaSuccess;
    }
    const auto member = d.members.find(stream);
    if (member == d.members.end()) {
      accum::simt::fail(
          "cudaEventRecord on a stream outside the capture while a stream captures (not "
          "emulated)");
    }
    d.captured_events[event] = {stream, member->second.held.size(), member->second.activity};
    return cudaSuccess;
  }
  d.captured_events.erase(event);
  d.last_recorded_in_capture.erase(event);
  if (d.hung.count(stream) != 0) {  // it completes when the hung work does: never
    d.pending.insert(event);
    return cudaSuccess;
  }
  d.pending.erase(event);
  found->second = std::chrono::steady_clock::now();  // the stream's work is done: it completes now
  return cudaSuccess;
}

// The host time between the two records: the emulator runs the work as it is launched.
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  auto& d = accum::simt::device();
  std::lock_guard<std::mutex> lock(d.mutex);
  const auto from = d.events.find(start), to = d.events.find(end);
  if (from == d.events.end() || to == d.events.end()) {
    return accum::simt::record(cudaErrorInvalidResourceHandle);
  }
  *ms = std::chrono::duration<float, std::milli>(to->second - from->second).count();
  return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t event) { return check_event(event); }

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  accum::simt::refuse_while_capturing("cudaEventSynchronize");
  {
    auto& d = accum::simt::device();
    std::lock_guard<std::mutex> lock(d.mutex);
    ++d.waits.event_syncs;
  }
  return check_event(event, "cudaEventSynchronize");
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int /*flags*/) {
  check_stream(stream);
  {
    auto& d = accum::simt::device();
    std::lock_guard<std::mutex> lock(d.mutex);
    const auto captured =
        d.capture_active ? d.captured_events.find(event) : d.captured_events.end();
    if (captured != d.captured_events.end()) {
      const auto recorded = captured->second;
      if (stream == d.capturing) {
        if (recorded.stream == d.capturing) return cudaSuccess;
        // A join: the member's work up to the event goes into the graph here.
        auto& member = d.members.at(recorded.stream);
        for (; member.joined < recorded.held; ++member.joined) {
          d.captured.push_back(std::move(member.held[member.joined]));
        }
        member.joined_activity = std::max(member.joined_activity, recorded.activity);
        return cudaSuccess;
      }
      if (recorded.stream != d.capturing) {
        accum::simt::fail(
            "cudaStreamWaitEvent between two streams that joined a capture (not emulated: only "
            "forks from and joins to the capturing stream)");
      }
      ++d.members[stream].activity;  // a fork: the stream joins the capture
      return cudaSuccess;
    }
    if (d.capture_active && (stream == d.capturing || d.members.count(stream) != 0)) {
      accum::simt::fail(
          "cudaStreamWaitEvent in a capture on an event recorded outside it: a dependency "
          "across the capture's edge (a GPU refuses it: cudaErrorStreamCaptureIsolation)");
    }
  }
  const cudaError_t status = check_event(event);
  if (status == cudaErrorNotReady) {  // the stream's later work waits for what never ends
    accum::simt::hang_stream(stream);
    return cudaSuccess;
  }
  return status;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  auto& d = accum::simt::device();
  std::lock_guard<std::mutex> lock(d.mutex);
  if (d.events.erase(event) == 0) return accum::simt::record(cudaErrorInvalidResourceHandle);
  d.last_recorded_in_capture.erase(event);
  d.captured_events.erase(event);
  delete reinterpret_cast<char*>(event);
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int /*flags*/) {
  *stream = reinterpret_cast<cudaStream_t>(new char);
  auto& d = accum::simt::device();
  std::lock_guard<std::mutex> lock(d.mutex);
  d.streams.insert(*stream);
  return cudaSuccess;
}

// An H100's range: 0 (the default) is the least priority, -5 the greatest. The emulator runs
// one thing at a time, so a priority changes nothing here; it is accepted (and, as by CUDA,
// clamped into the range).
cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest) {
  if (least != nullptr) *least = 0;
  if (greatest != nullptr) *greatest = -5;
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithPriority(cudaStream_t* stream, unsigned int flags,
                                         int /*priority*/) {
  return cudaStreamCreateWithFlags(stream, flags);
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  auto& d = accum::simt::device();
  std::lock_guard<std::mutex> lock(d.mutex);
  if (d.streams.erase(stream) == 0) return accum::simt::record(cudaErrorInvalidResourceHandle);
  delete reinterpret_cast<char*>(stream);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  check_stream(stream);
  accum::simt::refuse_while_capturing("cudaStreamSynchronize");
  {
    auto& d = accum::simt::device();
    std::lock_guard<std::mutex> lock(d.mutex);
    ++d.waits.stream_syncs;
    if (d.hung.count(stream) != 0) {
      accum::simt::fail(
          "cudaStreamSynchronize on a stream behind a collective that never completes: it "
          "would wait for ever");
    }
  }
  accum::simt::check_guards();
  return cudaSuccess;  // every operation finished when it was queued
}

cudaError_t cudaDeviceSynchronize() {
  accum::simt::refuse_while_capturing("cudaDeviceSynchronize");
  {
    auto& d = accum::simt::device();
    std::lock_guard<std::mutex> lock(d.mutex);
    ++d.waits.stream_syncs;
    if (!d.hung.empty()) {
      accum::simt::fail(
          "cudaDeviceSynchronize behind a collective that never completes: it would wait for "
          "ever");
    }
  }
  accum::simt::check_guards();
  return cudaSuccess;
}

cudaError_t cudaGetLastError() {
  const cudaError_t error = accum::simt::t_last_error;
  accum::simt::t_last_error = cudaSuccess;
  return error;
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorCapturedEvent:
      return "operation not permitted on an event last recorded in a capturing stream";
    case cudaErrorStreamCaptureUnjoined:
      return "capture sequence contains a fork that was not joined to the primary stream";
    default:
      return "unrecognized error code (SIMT emulator)";
  }
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (value < 0 || static_cast<size_t>(value) > accum::simt::max_dynamic_shared_opt_in()) {
    return accum::simt::record(cudaErrorInvalidValue);
  }
  accum::simt::set_dynamic_shared_limit(func, static_cast<size_t>(value));
  return cudaSuccess;
}

// ---- stream capture and graphs (simt_runtime.h: capture_if_capturing) ----
struct CUgraph_st {
  std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> ops;
};

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode /*mode*/) {
  check_stream(stream);
  auto& d = accum::simt::device();
  std::lock_guard<std::mutex> lock(d.mutex);
  if (d.capture_active) return accum::simt::record(cudaErrorIllegalState);
  if (stream == nullptr || stream == cudaStreamLegacy) {
    return accum::simt::record(cudaErrorStreamCaptureUnsupported);
  }
  d.capture_active = true;
  d.capturing = stream;
  d.captured.clear();
  d.members.clear();
  d.captured_events.clear();
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  check_stream(stream);
  auto& d = accum::simt::device();
  std::lock_guard<std::mutex> lock(d.mutex);
  *status = d.capture_active && (d.capturing == stream || d.members.count(stream) != 0)
                ? cudaStreamCaptureStatusActive
                : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  check_stream(stream);
  auto& d = accum::simt::device();
  std::lock_guard<std::mutex> lock(d.mutex);
  if (!d.capture_active || d.capturing != stream) {
    return accum::simt::record(cudaErrorIllegalState);
  }
  bool unjoined = false;
  for (const auto& [member_stream, member] : d.members) {
    unjoined = unjoined || member.activity > member.joined_activity;
  }
  std::vector<std::function<void()>> ops = std::move(d.captured);
  d.captured.clear();
  d.members.clear();
  d.captured_events.clear();
  d.capture_active = false;
  d.capturing = nullptr;
  // As a real capture: a stream forked from the capturing one and not joined back
  // invalidates the capture, and no graph comes out.
  if (unjoined) {
    *graph = nullptr;
    return accum::simt::record(cudaErrorStreamCaptureUnjoined);
  }
  *graph = new CUgraph_st{std::move(ops)};
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph,
                                 unsigned long long /*flags*/) {
  if (graph == nullptr) return accum::simt::record(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{graph->ops};
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  check_stream(stream);
  if (exec == nullptr) return accum::simt::record(cudaErrorInvalidValue);
  accum::simt::refuse_while_capturing("cudaGraphLaunch (a graph inside a capture)");
  for (const auto& op : exec->ops) op();
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}
