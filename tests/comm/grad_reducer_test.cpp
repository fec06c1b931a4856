// tests/comm/grad_reducer_test.cpp — bucketed gradient reduction on every host back
// end: stage 0 gives the sum over ranks with each bucket reduced exactly once; the
// overlap launches buckets as the backward announces them; ZeRO-1's owned ranges
// partition the buffer across ranks and reduce-scatter + all-gather equal all-reduce.
#include "daemon/worker/comm/grad_reducer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "tests/comm/comm_test_support.h"

namespace accum::comm {
namespace {

using namespace std::chrono_literals;
using commtest::pattern;
using commtest::pattern_sum;

const size_t kSizes[] = {1, 7, 1001, 12345};
const size_t kBucketBytes[] = {4, 12, 40, 4096, 25u << 20};
// Thousands of one-element buckets only cost time (each is a collective): cap them.
bool too_many_buckets(size_t n, size_t bucket_bytes) {
  return n / std::max<size_t>(1, bucket_bytes / 4) > 1100;
}

size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

// Buckets expected for n elements: the cut takes bucket_bytes/4 elements (ZeRO-1:
// rounded down to a multiple of the world size, at least one element per rank).
size_t expected_buckets(size_t n, size_t bucket_bytes, int zero_stage, int world) {
  size_t per_bucket = std::max<size_t>(1, bucket_bytes / 4);
  if (zero_stage == 1) {
    per_bucket = std::max<size_t>(world, per_bucket / world * world);
  }
  return ceil_div(n, per_bucket);
}

// Announces the backward's progress the way the trainer does: from the end of the
// buffer towards 0, in `layers` steps.
void simulate_backward(GradReducer* reducer, size_t n, size_t layers) {
  const size_t layer = std::max<size_t>(1, n / layers);
  for (size_t done = layer; done < n; done += layer) reducer->mark_ready_from(n - done);
  reducer->mark_ready_from(0);
}

class GradReducerTest : public ::testing::TestWithParam<CommBackend> {
 protected:
  void SetUp() override {
    comm_ = commtest::acquire(GetParam(), &owner_);
    comm_->counters() = {};
    comm_->set_step(0);
    comm_->set_default_timeout(60s);
    rank_ = comm_->rank();
    world_ = comm_->world_size();
  }
  std::vector<float> filled(size_t n) const {
    std::vector<float> grads(n);
    for (size_t i = 0; i < n; ++i) grads[i] = pattern(rank_, i);
    return grads;
  }
  std::unique_ptr<Communicator> owner_;
  Communicator* comm_ = nullptr;
  int rank_ = 0;
  int world_ = 1;
};

TEST_P(GradReducerTest, Stage0SumsOverRanksWithEachBucketReducedOnce) {
  for (size_t n : kSizes) {
    for (size_t bucket_bytes : kBucketBytes) {
      if (too_many_buckets(n, bucket_bytes)) continue;
      for (bool overlap : {true, false}) {
        SCOPED_TRACE("n=" + std::to_string(n) + " bucket_bytes=" + std::to_string(bucket_bytes) +
                     " overlap=" + std::to_string(overlap));
        std::vector<float> grads = filled(n);
        comm_->counters() = {};
        GradReducer reducer(comm_, grads.data(), n, {bucket_bytes, 0, overlap});
        const size_t buckets = expected_buckets(n, bucket_bytes, 0, world_);
        ASSERT_EQ(reducer.bucket_count(), buckets);
        reducer.begin_window();
        simulate_backward(&reducer, n, 5);
        reducer.finish();
        // Reduced twice would give W * sum, never reduced the rank's own value.
        for (size_t i = 0; i < n; ++i) ASSERT_EQ(grads[i], pattern_sum(world_, i)) << i;
        EXPECT_EQ(comm_->counters().gradient_collectives, static_cast<int64_t>(buckets));
        EXPECT_EQ(comm_->counters().collectives, static_cast<int64_t>(buckets));
        EXPECT_EQ(comm_->counters().bytes_reduced, static_cast<int64_t>(n * sizeof(float)));
        ASSERT_EQ(reducer.owned_ranges().size(), 1u);
        EXPECT_EQ(reducer.owned_ranges()[0], Range(0, n));
      }
    }
  }
}

TEST_P(GradReducerTest, BucketsAreCutFromTheEndAndCoverTheBufferOnce) {
  GradReducer reducer(comm_, nullptr, 1001, {400, 0, true});  // 100 floats per bucket
  const std::vector<Range> ranges = reducer.bucket_ranges();
  ASSERT_EQ(ranges.size(), 11u);
  size_t expected_end = 1001;
  for (const Range& range : ranges) {
    EXPECT_EQ(range.second, expected_end);
    EXPECT_LE(range.second - range.first, 100u);
    expected_end = range.first;
  }
  EXPECT_EQ(expected_end, 0u);
  EXPECT_EQ(ranges.front(), Range(901, 1001));
  EXPECT_EQ(ranges.back(), Range(0, 1));
}

TEST_P(GradReducerTest, OverlapLaunchesEachBucketAsSoonAsItIsFinal) {
  const size_t n = 1000;
  std::vector<float> grads = filled(n);
  GradReducer reducer(comm_, grads.data(), n, {400, 0, true});  // buckets of 100
  reducer.begin_window();
  auto launched = [&] { return comm_->counters().gradient_collectives; };
  reducer.mark_ready_from(1000);
  EXPECT_EQ(launched(), 0);
  reducer.mark_ready_from(901);  // [901, 1000) final: bucket [900, 1000) is not yet
  EXPECT_EQ(launched(), 0);
  reducer.mark_ready_from(900);
  EXPECT_EQ(launched(), 1);
  reducer.mark_ready_from(555);  // buckets starting at 900, 800, 700, 600
  EXPECT_EQ(launched(), 4);
  reducer.mark_ready_from(555);  // nothing new: no bucket is launched twice
  EXPECT_EQ(launched(), 4);
  reducer.mark_ready_from(0);
  EXPECT_EQ(launched(), 10);
  reducer.finish();
  EXPECT_EQ(launched(), 10);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(grads[i], pattern_sum(world_, i)) << i;
}

TEST_P(GradReducerTest, WithoutOverlapNothingIsLaunchedBeforeFinish) {
  const size_t n = 1000;
  std::vector<float> grads = filled(n);
  GradReducer reducer(comm_, grads.data(), n, {400, 0, false});
  reducer.begin_window();
  reducer.mark_ready_from(0);
  EXPECT_EQ(comm_->counters().collectives, 0);
  reducer.finish();
  EXPECT_EQ(comm_->counters().gradient_collectives, 10);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(grads[i], pattern_sum(world_, i)) << i;
}

TEST_P(GradReducerTest, EveryWindowReducesEveryBucketExactlyOnce) {
  const size_t n = 777;
  std::vector<float> grads(n);
  GradReducer reducer(comm_, grads.data(), n, {256, 0, true});
  for (int window = 0; window < 3; ++window) {
    const std::vector<float> fresh = filled(n);
    std::copy(fresh.begin(), fresh.end(), grads.begin());  // keeps grads.data() stable
    comm_->counters() = {};
    reducer.begin_window();
    simulate_backward(&reducer, n, 7);
    reducer.finish();
    EXPECT_EQ(comm_->counters().gradient_collectives, static_cast<int64_t>(reducer.bucket_count()));
    EXPECT_EQ(comm_->counters().bytes_reduced, static_cast<int64_t>(n * sizeof(float)));
    EXPECT_GE(comm_->counters().exposed_ms, 0.0);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(grads[i], pattern_sum(world_, i)) << i;
  }
}

TEST_P(GradReducerTest, CallsOutsideAWindowAreRefused) {
  std::vector<float> grads(10);
  GradReducer reducer(comm_, grads.data(), grads.size(), {});
  EXPECT_THROW(reducer.mark_ready_from(0), std::logic_error);
  EXPECT_THROW(reducer.finish(), std::logic_error);
  EXPECT_EQ(comm_->counters().collectives, 0);
  EXPECT_THROW(GradReducer(comm_, grads.data(), grads.size(), {4, 2, true}), std::invalid_argument);
}

TEST_P(GradReducerTest, Zero1OwnedRangesPartitionTheBufferAcrossRanks) {
  for (size_t n : kSizes) {
    for (size_t bucket_bytes : kBucketBytes) {
      if (too_many_buckets(n, bucket_bytes)) continue;
      SCOPED_TRACE("n=" + std::to_string(n) + " bucket_bytes=" + std::to_string(bucket_bytes));
      GradReducer reducer(comm_, nullptr, n, {bucket_bytes, 1, true});
      ASSERT_EQ(reducer.bucket_count(), expected_buckets(n, bucket_bytes, 1, world_));
      std::vector<int64_t> owners(n, 0);
      size_t previous_end = 0;
      size_t owned = 0;
      for (const Range& range : reducer.owned_ranges()) {
        ASSERT_LT(range.first, range.second);
        ASSERT_GE(range.first, previous_end) << "ranges overlap or are not ascending";
        ASSERT_LE(range.second, n);
        for (size_t i = range.first; i < range.second; ++i) owners[i] += 1;
        previous_end = range.second;
        owned += range.second - range.first;
      }
      // 1/N of each bucket, rounded up.
      EXPECT_LE(owned, ceil_div(n, world_) + reducer.bucket_count());
      comm_->all_reduce(owners.data(), n, {ReduceOp::kSum, DataType::kInt64});
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(owners[i], 1) << "element " << i;
    }
  }
}

// Reduce-scatter, then each rank "updates" its owned ranges (here: copies the reduced
// gradient into params), then all-gather: every rank ends with the all-reduce result.
TEST_P(GradReducerTest, Zero1ReduceScatterPlusAllGatherEqualsAllReduce) {
  for (size_t n : kSizes) {
    for (size_t bucket_bytes : kBucketBytes) {
      if (too_many_buckets(n, bucket_bytes)) continue;
      SCOPED_TRACE("n=" + std::to_string(n) + " bucket_bytes=" + std::to_string(bucket_bytes));
      std::vector<float> reference(n);
      for (size_t i = 0; i < n; ++i) {
        reference[i] = std::sin(0.37f * static_cast<float>(i) + 1.3f * static_cast<float>(rank_));
      }
      std::vector<float> zero_grads = reference;
      GradReducer stage0(comm_, reference.data(), n, {bucket_bytes, 0, true});
      stage0.begin_window();
      stage0.finish();

      comm_->counters() = {};
      GradReducer zero1(comm_, zero_grads.data(), n, {bucket_bytes, 1, true});
      zero1.begin_window();
      simulate_backward(&zero1, n, 4);
      zero1.finish();
      std::vector<float> params(n, std::numeric_limits<float>::quiet_NaN());
      for (const Range& range : zero1.owned_ranges()) {
        for (size_t i = range.first; i < range.second; ++i) {
          ASSERT_NEAR(zero_grads[i], reference[i], 1e-5f) << i;
          params[i] = zero_grads[i];
        }
      }
      zero1.all_gather_params(params.data());
      for (size_t i = 0; i < n; ++i) ASSERT_NEAR(params[i], reference[i], 1e-5f) << i;
      const int64_t buckets = static_cast<int64_t>(zero1.bucket_count());
      EXPECT_EQ(comm_->counters().gradient_collectives, 2 * buckets);
      EXPECT_EQ(comm_->counters().bytes_reduced, static_cast<int64_t>(n * sizeof(float)));
      EXPECT_EQ(comm_->counters().bytes_gathered, static_cast<int64_t>(n * sizeof(float)));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, GradReducerTest,
                         ::testing::Values(CommBackend::kSingle, CommBackend::kMpi),
                         [](const auto& info) { return commtest::backend_label(info.param); });

// finish() times out on the ranks that wait for a late one, counts the blocked time
// as exposed, names the step, and can be called again to complete the window.
TEST(GradReducerTimeoutTest, LateRankTimesOutFinishThenRetrySucceeds) {
  Communicator& comm = commtest::world();
  if (comm.world_size() < 2) GTEST_SKIP() << "needs at least 2 ranks (run under mpirun -np 2)";
  comm.counters() = {};
  comm.set_step(9);
  const size_t n = 1000;
  std::vector<float> grads(n);
  for (size_t i = 0; i < n; ++i) grads[i] = pattern(comm.rank(), i);
  GradReducer reducer(&comm, grads.data(), n, {400, 0, true});
  reducer.begin_window();
  if (comm.rank() == 1) {
    std::this_thread::sleep_for(2000ms);
    comm.set_default_timeout(60s);
    reducer.finish();
  } else {
    comm.set_default_timeout(300ms);
    try {
      reducer.finish();
      ADD_FAILURE() << "finish() returned although rank 1 had not joined";
    } catch (const CommError& error) {
      const std::string message = error.what();
      EXPECT_NE(message.find("gradient reduction"), std::string::npos) << message;
      EXPECT_NE(message.find("rank " + std::to_string(comm.rank())), std::string::npos) << message;
      EXPECT_NE(message.find("optimizer step 9"), std::string::npos) << message;
    }
    EXPECT_GE(comm.counters().exposed_ms, 250.0);
    comm.set_default_timeout(60s);
    reducer.finish();
  }
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(grads[i], pattern_sum(comm.world_size(), i)) << i;
  EXPECT_EQ(comm.counters().gradient_collectives, 10);
  comm.set_step(0);
}

}  // namespace
}  // namespace accum::comm
