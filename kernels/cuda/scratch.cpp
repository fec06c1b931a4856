// kernels/cuda/scratch.cpp — grow-only device scratch and pinned host staging (scratch.h).
#include "kernels/cuda/scratch.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "kernels/cuda/cuda_check.h"

namespace accum::kernels::cuda {

size_t scratch_bound(size_t rows, int C, int NH, int V, bool side_work_only) {
  const size_t chunks = (rows + 63) / 64;  // column_reduce.cuh's kRowsPerChunk
  const size_t c = static_cast<size_t>(C);
  // kPartials: column sums over 64-row chunks, at most 4C columns (the fc bias; the
  // LayerNorm gradients are 3 x C); sum_squares' 513 doubles are less.
  const size_t partials = sizeof(float) * chunks * 4 * c;
  // kBiasGrad: one float per output column of a biased matmul.
  const size_t bias_grad = sizeof(float) * std::max<size_t>(4 * c, static_cast<size_t>(V));
  // kTokens: the encoder's buckets (unique tokens, their starts, every position).
  const size_t tokens = sizeof(int32_t) * (3 * rows + 1);
  // kRowStats: attention's D, one float per query row and head.
  const size_t row_stats = sizeof(float) * rows * static_cast<size_t>(NH);
  auto grown = [](size_t slot) { return slot + slot / 4; };  // get() grows by 1.25x
  // Side work (the backward's weight gradients) uses only the matmul's slots.
  if (side_work_only) return grown(partials) + grown(bias_grad);
  return (size_t{64} << 10) +  // kTable: AdamW's pieces, a few KB
         grown(partials) + grown(bias_grad) + grown(tokens) + grown(row_stats);
}

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
  // The whole device: work that reads the old buffer may sit on any stream (the side
  // stream's graph nodes are launched on the main stream).
  CUDA_CHECK(cudaDeviceSynchronize());
  if (buffer.ptr != nullptr) CUDA_CHECK(cudaFree(buffer.ptr));
  buffer.ptr = nullptr;
  buffer.bytes = 0;
  const cudaError_t err = cudaMalloc(&buffer.ptr, grown);
  if (err == cudaErrorMemoryAllocation) {  // as Backend::alloc: the trainer explains it
    (void)cudaGetLastError();
    buffer.ptr = nullptr;
    throw std::bad_alloc();
  }
  CUDA_CHECK(err);
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
