// kernels/host_staging.h — the host's view of back-end memory, a piece at a time.
//
// Checkpoints move every weight and Adam moment between back-end memory and files. Copying
// them whole through host vectors costs 12 bytes of host memory per parameter on top of the
// model (15.6 GB at 1.3B; on the CPU back end it doubles the resident set while a checkpoint
// is written or read). With HostStaging the host holds one piece: on the CPU back end the
// memory already is the host's and is used in place; on a GPU one buffer carries each piece
// (download / upload), grown to the largest piece asked for.
#pragma once

#include <cstddef>
#include <vector>

#include "kernels/backend.h"

namespace accum::kernels {

class HostStaging {
 public:
  // Pieces the callers ask for: 16 MiB of floats (the size does not matter much beyond
  // amortizing a transfer; any count works).
  static constexpr size_t kPieceFloats = size_t{4} << 20;

  explicit HostStaging(Backend* backend)
      : backend_(backend), in_place_(backend->kind() == DeviceKind::kCpu) {}

  // Host memory holding `count` floats of back-end memory at `device`; valid until the next
  // call on this object.
  const float* read(const float* device, size_t count) {
    if (in_place_) return device;
    grow(count);
    backend_->download(buffer_.data(), device, count * sizeof(float));
    return buffer_.data();
  }

  // Host memory for `count` floats bound for `device`: fill it, then call write(device, count)
  // before the next call on this object.
  float* buffer_for(float* device, size_t count) {
    if (in_place_) return device;
    grow(count);
    return buffer_.data();
  }
  void write(float* device, size_t count) {
    if (!in_place_) backend_->upload(device, buffer_.data(), count * sizeof(float));
  }

 private:
  void grow(size_t count) {
    if (buffer_.size() < count) buffer_.resize(count);
  }

  Backend* backend_;
  bool in_place_;
  std::vector<float> buffer_;
};

}  // namespace accum::kernels
