// kernels/cuda/scratch.h — grow-only device scratch buffers owned by the back end.
// Ops that need temporary memory (partial sums, token buckets) borrow a slot; a slot's
// contents are valid only until the next op that uses the same slot.
// Thread safety: none; owned by one CudaBackend (one trainer thread).
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <cstddef>

namespace accum::kernels::cuda {

// kTable: small host-built tables (adamw_update_pieces).
enum class ScratchSlot { kPartials, kTokens, kRowStats, kTable, kCount };

class DeviceScratch {
 public:
  explicit DeviceScratch(cudaStream_t stream) : stream_(stream) {}
  ~DeviceScratch();
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;

  // Returns >= `bytes` of device memory for `slot` (16-byte aligned). Growing waits for
  // `stream` first, so work still reading the old buffer finishes before it is freed.
  void* get(ScratchSlot slot, size_t bytes);

 private:
  struct Buffer {
    void* ptr = nullptr;
    size_t bytes = 0;
  };
  cudaStream_t stream_;
  std::array<Buffer, static_cast<size_t>(ScratchSlot::kCount)> buffers_{};
};

}  // namespace accum::kernels::cuda
