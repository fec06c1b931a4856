// kernels/cuda/scratch.cpp — grow-only device scratch and pinned host staging (scratch.h).
#include "kernels/cuda/scratch.h"

#include <cstring>

#include "kernels/cuda/cuda_check.h"

namespace accum::kernels::cuda {

DeviceScratch::~DeviceScratch() {
  for (Buffer& buffer : buffers_) {
    if (buffer.ptr != nullptr) cudaFree(buffer.ptr);  // destructor: errors cannot be reported
  }
}

void* DeviceScratch::get(ScratchSlot slot, size_t bytes) {
  Buffer& buffer = buffers_[static_cast<size_t>(slot)];
  touched_ |= 1u << static_cast<unsigned>(slot);
  if (bytes <= buffer.bytes) return buffer.ptr;
  const size_t grown = bytes + bytes / 4;  // amortize repeated growth
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (buffer.ptr != nullptr) CUDA_CHECK(cudaFree(buffer.ptr));
  buffer.ptr = nullptr;
  buffer.bytes = 0;
  CUDA_CHECK(cudaMalloc(&buffer.ptr, grown));
  buffer.bytes = grown;
  ++moves_[static_cast<size_t>(slot)];
  return buffer.ptr;
}

HostStaging::~HostStaging() {
  for (Slot& slot : slots_) {  // destructor: errors cannot be reported
    if (slot.copied != nullptr) {
      cudaEventSynchronize(slot.copied);
      cudaEventDestroy(slot.copied);
    }
    if (slot.host != nullptr) cudaFreeHost(slot.host);
  }
}

void HostStaging::copy_to_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  if (bytes > kMaxBytes) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    return;
  }
  Slot& slot = slots_[next_];
  next_ = (next_ + 1) % kSlots;
  if (slot.copied == nullptr) {
    CUDA_CHECK(cudaEventCreateWithFlags(&slot.copied, cudaEventDisableTiming));
  } else {
    CUDA_CHECK(cudaEventSynchronize(slot.copied));  // the slot's previous copy is done
  }
  if (slot.bytes < bytes) {
    if (slot.host != nullptr) CUDA_CHECK(cudaFreeHost(slot.host));
    slot.host = nullptr;
    slot.bytes = 0;
    const size_t grown = bytes + bytes / 4;  // amortize repeated growth
    CUDA_CHECK(cudaMallocHost(&slot.host, grown));
    slot.bytes = grown;
  }
  std::memcpy(slot.host, src, bytes);
  CUDA_CHECK(cudaMemcpyAsync(dst, slot.host, bytes, cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaEventRecord(slot.copied, stream_));
}

}  // namespace accum::kernels::cuda
