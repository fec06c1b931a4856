// kernels/cuda/scratch.h — grow-only buffers owned by the back end:
//  * DeviceScratch: device memory that ops needing temporaries (partial sums, token
//    buckets) borrow by slot; a slot's contents are valid only until the next op that
//    uses the same slot.
//  * HostStaging: pinned host memory through which small host->device copies travel, so
//    that queuing them neither waits for the stream nor lets it run dry.
// Thread safety: none; owned by one CudaBackend (one trainer thread).
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <cstddef>
#include <cstdint>

namespace accum::kernels::cuda {

// kTable: small host-built tables (adamw_update_pieces); kBiasGrad: a bias gradient
// cuBLASLt writes before it is added into the fp32 gradients.
enum class ScratchSlot { kPartials, kTokens, kRowStats, kTable, kBiasGrad, kCount };

// The most a DeviceScratch holds after a micro-step of `rows` = B*T tokens of a model
// with width C, NH heads and V output classes (the memory arithmetic's share of it);
// side_work_only: the side stream's, which only matmul backwards use.
size_t scratch_bound(size_t rows, int C, int NH, int V, bool side_work_only = false);

class DeviceScratch {
 public:
  DeviceScratch() = default;
  ~DeviceScratch();
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;

  // Returns >= `bytes` of device memory for `slot` (16-byte aligned). Growing waits for
  // the device first, so work still reading the old buffer finishes before it is freed;
  // throws std::bad_alloc when the device has no room for the grown buffer.
  void* get(ScratchSlot slot, size_t bytes);
  // Which slots get() handed out since watch() (a bit per slot), and how often each slot
  // has moved (grown): a recorded CUDA graph is stale once a slot it uses has moved.
  void watch() { touched_ = 0; }
  uint32_t touched() const { return touched_; }
  uint64_t moves(ScratchSlot slot) const { return moves_[static_cast<size_t>(slot)]; }

 private:
  struct Buffer {
    void* ptr = nullptr;
    size_t bytes = 0;
  };
  std::array<Buffer, static_cast<size_t>(ScratchSlot::kCount)> buffers_{};
  std::array<uint64_t, static_cast<size_t>(ScratchSlot::kCount)> moves_{};
  uint32_t touched_ = 0;
};

// A ring of pinned host slots. copy_to_device() copies the caller's bytes into the next
// slot, queues the device copy on the stream and returns: the caller may reuse its buffer
// at once, and the host never waits for earlier work. A slot is refilled only after the
// copy that last read it has finished (one event per slot), so with kSlots slots the host
// waits only when it is kSlots copies ahead of the device. Copies above kMaxBytes (weights,
// optimizer state: rare, large) go straight from the caller's memory and wait. A step's
// copies are small (tokens, targets and mask: 9 bytes per token; the encoder's buckets:
// at most 12 bytes per token), so 4 MiB covers micro-batches of 350K tokens and bounds
// the pinned memory at kSlots x 4 MiB.
class HostStaging {
 public:
  static constexpr int kSlots = 8;
  static constexpr size_t kMaxBytes = size_t{4} << 20;

  explicit HostStaging(cudaStream_t stream) : stream_(stream) {}
  ~HostStaging();
  HostStaging(const HostStaging&) = delete;
  HostStaging& operator=(const HostStaging&) = delete;

  void copy_to_device(void* dst, const void* src, size_t bytes);

 private:
  struct Slot {
    void* host = nullptr;  // pinned
    size_t bytes = 0;
    cudaEvent_t copied = nullptr;  // recorded after the last copy out of `host`
  };
  cudaStream_t stream_;
  std::array<Slot, kSlots> slots_{};
  int next_ = 0;
};

}  // namespace accum::kernels::cuda
