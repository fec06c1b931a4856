// comm/grad_reducer.cpp — bucketed reduction of the flat fp32 gradient buffer.
//
// Bucket cut (identical on every rank, so collectives match): with E elements per
// bucket (bucket_bytes / 4; under ZeRO-1 rounded down to a multiple of N, at least
// N), bucket 0 = [n-E, n), bucket 1 = [n-2E, n-E), ..., the last one [0, r). Buckets
// are issued in that order, which is also the order the backward finishes them.
//
// ZeRO-1: a bucket of L elements is padded to P = ceil(L/N)*N; rank r owns
// chunk = P/N elements starting at begin + r*chunk, clipped to the bucket. Only the
// last bucket [0, r) can have P != L; it is reduced through a zero-padded staging
// buffer of P elements (device memory of the communicator) and its owned slice copied
// back. Every other bucket is reduce-scattered and all-gathered in place.
#include "daemon/worker/comm/grad_reducer.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "daemon/worker/comm/work_info.h"

namespace accum::comm {

namespace {

struct Bucket {
  size_t begin = 0;
  size_t end = 0;
  size_t chunk = 0;     // ZeRO-1: elements per rank (padded bucket / N)
  bool staged = false;  // ZeRO-1: padded through the staging buffer
  Range owned{0, 0};    // ZeRO-1: this rank's slice, clipped to [begin, end)
  size_t length() const { return end - begin; }
};

double elapsed_ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since)
      .count();
}

}  // namespace

struct GradReducer::Impl {
  Communicator* comm;
  float* grads;
  size_t n;
  GradReducerOptions options;
  std::vector<Bucket> buckets;                   // in issue order (end of the buffer first)
  std::vector<Range> owned;                      // ascending
  float* staging = nullptr;                      // ZeRO-1, P elements of the staged bucket
  std::vector<std::unique_ptr<Work>> in_flight;  // index i: buckets[i]
  bool window_open = false;

  void cut_buckets();
  void launch(const Bucket& bucket);
  // Waits for every launched collective (one deadline for all) and adds the blocked
  // time to counters().exposed_ms.
  void wait_all(const char* what);
};

void GradReducer::Impl::cut_buckets() {
  const size_t world = static_cast<size_t>(comm->world_size());
  const size_t rank = static_cast<size_t>(comm->rank());
  size_t per_bucket = std::max<size_t>(1, options.bucket_bytes / sizeof(float));
  if (options.zero_stage == 1) per_bucket = std::max(world, per_bucket / world * world);
  size_t staged_elements = 0;
  for (size_t end = n; end > 0;) {
    Bucket bucket;
    bucket.end = end;
    bucket.begin = end > per_bucket ? end - per_bucket : 0;
    if (options.zero_stage == 1) {
      const size_t padded = (bucket.length() + world - 1) / world * world;
      bucket.chunk = padded / world;
      bucket.staged = padded != bucket.length();
      if (bucket.staged) staged_elements = padded;
      const size_t own_begin = std::min(bucket.end, bucket.begin + rank * bucket.chunk);
      const size_t own_end = std::min(bucket.end, own_begin + bucket.chunk);
      bucket.owned = {own_begin, own_end};
      if (own_end > own_begin) owned.push_back(bucket.owned);
    }
    buckets.push_back(bucket);
    end = bucket.begin;
  }
  if (options.zero_stage == 0 && n > 0) owned.push_back({0, n});
  std::sort(owned.begin(), owned.end());
  if (staged_elements > 0) {
    staging = static_cast<float*>(comm->alloc_buffer(staged_elements * sizeof(float)));
  }
}

void GradReducer::Impl::launch(const Bucket& bucket) {
  const size_t rank = static_cast<size_t>(comm->rank());
  CollectiveOptions sum;  // kSum, float32
  if (options.zero_stage == 0) {
    in_flight.push_back(comm->all_reduce_async(grads + bucket.begin, bucket.length(), sum));
  } else if (bucket.staged) {
    const size_t padded = bucket.chunk * static_cast<size_t>(comm->world_size());
    comm->zero_buffer(staging, padded * sizeof(float));
    comm->copy_buffer(staging, grads + bucket.begin, bucket.length() * sizeof(float));
    in_flight.push_back(
        comm->reduce_scatter_async(staging, staging + rank * bucket.chunk, bucket.chunk, sum));
  } else {
    float* send = grads + bucket.begin;
    in_flight.push_back(
        comm->reduce_scatter_async(send, send + rank * bucket.chunk, bucket.chunk, sum));
  }
  CommCounters& counters = comm->counters();
  counters.gradient_collectives += 1;
  counters.bytes_reduced += static_cast<int64_t>(bucket.length() * sizeof(float));
}

void GradReducer::Impl::wait_all(const char* what) {
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + comm->default_timeout();
  try {
    for (auto& work : in_flight) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      try {
        work->wait(std::max(left, std::chrono::milliseconds(0)));
      } catch (const CommError& error) {
        throw CommError(std::string(what) + " (" + std::to_string(in_flight.size()) +
                        " buckets, deadline " + std::to_string(comm->default_timeout().count()) +
                        " ms for all): " + error.what());
      }
    }
  } catch (...) {
    comm->counters().exposed_ms += elapsed_ms(start);
    throw;
  }
  comm->counters().exposed_ms += elapsed_ms(start);
  in_flight.clear();
}

GradReducer::GradReducer(Communicator* comm, float* grads, size_t n,
                         const GradReducerOptions& options)
    : impl_(std::make_unique<Impl>()) {
  if (options.zero_stage != 0 && options.zero_stage != 1) {
    throw std::invalid_argument("GradReducer: zero_stage " + std::to_string(options.zero_stage) +
                                " is not supported (expected 0 or 1)");
  }
  impl_->comm = comm;
  impl_->grads = grads;
  impl_->n = n;
  impl_->options = options;
  impl_->cut_buckets();
}

GradReducer::~GradReducer() {
  if (!impl_->in_flight.empty()) {
    // The buffers must stay live until the collectives finish; wait, but never throw.
    try {
      impl_->wait_all("GradReducer destructor");
    } catch (const CommError& error) {
      comm_logger()->error("GradReducer destroyed with collectives in flight: {}", error.what());
    }
  }
  if (impl_->staging != nullptr) impl_->comm->free_buffer(impl_->staging);
}

void GradReducer::begin_window() {
  if (!impl_->in_flight.empty()) {
    throw std::logic_error("GradReducer::begin_window: the previous window's " +
                           std::to_string(impl_->in_flight.size()) +
                           " bucket(s) are still in flight (call finish() first)");
  }
  impl_->window_open = true;
}

void GradReducer::mark_ready_from(size_t offset) {
  if (!impl_->window_open) {
    throw std::logic_error(
        "GradReducer::mark_ready_from called outside a window (call begin_window() before the "
        "last micro-batch's backward)");
  }
  if (!impl_->options.overlap) return;
  while (impl_->in_flight.size() < impl_->buckets.size() &&
         impl_->buckets[impl_->in_flight.size()].begin >= offset) {
    impl_->launch(impl_->buckets[impl_->in_flight.size()]);
  }
}

void GradReducer::finish() {
  if (!impl_->window_open) {
    throw std::logic_error("GradReducer::finish called without begin_window()");
  }
  while (impl_->in_flight.size() < impl_->buckets.size()) {
    impl_->launch(impl_->buckets[impl_->in_flight.size()]);
  }
  impl_->wait_all("gradient reduction");
  impl_->window_open = false;
  const size_t rank = static_cast<size_t>(impl_->comm->rank());
  for (const Bucket& bucket : impl_->buckets) {
    if (!bucket.staged || bucket.owned.second == bucket.owned.first) continue;
    impl_->comm->copy_buffer(impl_->grads + bucket.owned.first,
                             impl_->staging + rank * bucket.chunk,
                             (bucket.owned.second - bucket.owned.first) * sizeof(float));
  }
}

const std::vector<Range>& GradReducer::owned_ranges() const { return impl_->owned; }

size_t GradReducer::bucket_count() const { return impl_->buckets.size(); }

std::vector<Range> GradReducer::bucket_ranges() const {
  std::vector<Range> ranges;
  for (const Bucket& bucket : impl_->buckets) ranges.push_back({bucket.begin, bucket.end});
  return ranges;
}

void GradReducer::all_gather_params(float* params) {
  if (impl_->options.zero_stage == 0) return;
  if (!impl_->in_flight.empty()) {
    throw std::logic_error("GradReducer::all_gather_params while gradient buckets are in flight");
  }
  Communicator* comm = impl_->comm;
  const size_t rank = static_cast<size_t>(comm->rank());
  for (const Bucket& bucket : impl_->buckets) {
    if (bucket.staged) {
      const size_t padded = bucket.chunk * static_cast<size_t>(comm->world_size());
      comm->zero_buffer(impl_->staging, padded * sizeof(float));
      comm->copy_buffer(impl_->staging, params + bucket.begin, bucket.length() * sizeof(float));
      impl_->in_flight.push_back(comm->all_gather_async(
          impl_->staging + rank * bucket.chunk, impl_->staging, bucket.chunk, DataType::kFloat32));
    } else {
      float* recv = params + bucket.begin;
      impl_->in_flight.push_back(comm->all_gather_async(recv + rank * bucket.chunk, recv,
                                                        bucket.chunk, DataType::kFloat32));
    }
    comm->counters().gradient_collectives += 1;
    comm->counters().bytes_gathered += static_cast<int64_t>(bucket.length() * sizeof(float));
  }
  impl_->wait_all("parameter all-gather");
  for (const Bucket& bucket : impl_->buckets) {
    if (bucket.staged) {
      comm->copy_buffer(params + bucket.begin, impl_->staging, bucket.length() * sizeof(float));
    }
  }
}

}  // namespace accum::comm
