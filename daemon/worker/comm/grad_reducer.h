// comm/grad_reducer.h — reduces the flat fp32 gradient buffer once per optimizer
// step, in contiguous buckets launched while the backward is still running.
//
// The backward walks the parameter buffer from its end towards offset 0 (the
// canonical order puts the embeddings first and the last block / final LayerNorm
// last), so the trainer announces progress with mark_ready_from(offset): every
// gradient at or after `offset` is final for this window. Buckets are cut from the
// end of the buffer (same cut on every rank), each launched as soon as it is
// entirely final, and issued in the same order on every rank.
//
// Stage 0: each bucket is all-reduced (sum). ZeRO-1: each bucket is
// reduce-scattered; rank r owns the r-th 1/N slice of every bucket (padded so
// buckets divide by N) and only that slice is reduced on r — see owned_ranges().
//
// Thread safety: driven by the trainer's thread only.
#pragma once

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "daemon/worker/comm/communicator.h"

namespace accum::comm {

struct GradReducerOptions {
  size_t bucket_bytes = 25u << 20;
  int zero_stage = 0;   // 0 or 1
  bool overlap = true;  // false: launch every bucket in finish()
};

// [begin, end) element ranges of the flat buffer.
using Range = std::pair<size_t, size_t>;

class GradReducer {
 public:
  // `grads` (n fp32 elements, a buffer of the communicator's device) must outlive this.
  GradReducer(Communicator* comm, float* grads, size_t n, const GradReducerOptions& options);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // Starts a new accumulation boundary window (call before the last micro-batch's backward).
  void begin_window();
  // Gradients [offset, n) are final: launch every bucket lying entirely inside.
  void mark_ready_from(size_t offset);
  // Launches what is left, waits for every bucket (one deadline of the communicator's
  // default_timeout() for all of them; CommError past it). Time blocked here adds to
  // counters().exposed_ms; each bucket adds 1 to gradient_collectives and its payload
  // bytes to bytes_reduced.
  // Stage 0: grads hold the sum over ranks. ZeRO-1: grads hold the sum over ranks
  // on owned_ranges() (elsewhere undefined).
  void finish();
  // Ranges of the flat buffer whose reduced values this rank owns (stage 0: [0, n)).
  const std::vector<Range>& owned_ranges() const;
  // ZeRO-1: all-gathers `params` (n fp32, owned ranges updated by this rank) so every
  // rank holds every parameter. Stage 0: no-op. Counts gradient_collectives,
  // bytes_gathered and exposed_ms like finish().
  void all_gather_params(float* params);
  size_t bucket_count() const;
  // [begin, end) of every bucket, in issue order (the end of the buffer first).
  std::vector<Range> bucket_ranges() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace accum::comm
