// kernels/cuda/scratch.cpp — grow-only scratch slots (see scratch.h).
#include "kernels/cuda/scratch.h"

#include "kernels/cuda/cuda_check.h"

namespace accum::kernels::cuda {

DeviceScratch::~DeviceScratch() {
  for (Buffer& buffer : buffers_) {
    if (buffer.ptr != nullptr) cudaFree(buffer.ptr);  // destructor: errors cannot be reported
  }
}

void* DeviceScratch::get(ScratchSlot slot, size_t bytes) {
  Buffer& buffer = buffers_[static_cast<size_t>(slot)];
  if (bytes <= buffer.bytes) return buffer.ptr;
  const size_t grown = bytes + bytes / 4;  // amortize repeated growth
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (buffer.ptr != nullptr) CUDA_CHECK(cudaFree(buffer.ptr));
  buffer.ptr = nullptr;
  buffer.bytes = 0;
  CUDA_CHECK(cudaMalloc(&buffer.ptr, grown));
  buffer.bytes = grown;
  return buffer.ptr;
}

}  // namespace accum::kernels::cuda
