// train/optimizer.h — AdamW over the parameter ranges this rank owns.
//
// Stage 0 owns the whole flat buffer; ZeRO-1 owns 1/N of it (GradReducer::owned_ranges()).
// Moments are stored compactly for the owned ranges only, so optimizer memory shrinks
// by N under ZeRO-1. Weight decay applies to tensors with two or more dimensions only,
// so each owned range is split at tensor boundaries.
//
// Thread safety: driven by the trainer's thread only.
#pragma once

#include <cstdint>
#include <vector>

#include "daemon/worker/comm/grad_reducer.h"
#include "daemon/worker/model/gpt2.h"
#include "kernels/backend.h"

namespace accum::train {

class AdamW {
 public:
  AdamW(kernels::Backend* backend, const std::vector<model::ParamTensor>& tensors,
        std::vector<comm::Range> owned);
  ~AdamW();
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;

  // Sum of squares of the owned gradients (fixed order).
  double owned_sum_squares(const float* grads) const;
  // One AdamW step t (1-based) on the owned ranges: g = grads * grad_scale.
  void step(float* master, void* working, const float* grads, kernels::AdamWParams params,
            float weight_decay);

  const std::vector<comm::Range>& owned() const { return owned_; }
  size_t owned_count() const { return owned_count_; }
  // The compact moments (owned ranges concatenated; owned_count() floats each), in the
  // back end's memory: what checkpoints write and read, a piece at a time.
  float* exp_avg() { return m_; }
  float* exp_avg_sq() { return v_; }
  const float* exp_avg() const { return m_; }
  const float* exp_avg_sq() const { return v_; }
  // Host copies of the compact moments and back (for the GPU benchmark's step).
  void download(std::vector<float>* m, std::vector<float>* v) const;
  void upload(const std::vector<float>& m, const std::vector<float>& v);

 private:
  kernels::Backend* backend_;
  std::vector<comm::Range> owned_;
  // One piece per (owned range x tensor): flat offset, count, offset in the compact moments.
  std::vector<kernels::Backend::AdamWSegment> pieces_;
  size_t owned_count_ = 0;
  float* m_ = nullptr;
  float* v_ = nullptr;
};

}  // namespace accum::train
