// tests/comm/communicator_test.cpp — the collectives of every host back end
// (single-process and MPI) against values computed from the rank and world size, so
// the same test checks 1, 2 and 4 ranks.
#include "daemon/worker/comm/communicator.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "tests/comm/comm_test_support.h"

namespace accum::comm {
namespace {

using namespace std::chrono_literals;
using commtest::pattern;
using commtest::pattern_sum;

class CommTest : public ::testing::TestWithParam<CommBackend> {
 protected:
  void SetUp() override {
    comm_ = commtest::acquire(GetParam(), &owner_);
    comm_->counters() = {};
    comm_->set_step(0);
    comm_->set_default_timeout(60s);
    rank_ = comm_->rank();
    world_ = comm_->world_size();
  }
  std::unique_ptr<Communicator> owner_;
  Communicator* comm_ = nullptr;
  int rank_ = 0;
  int world_ = 1;
};

TEST_P(CommTest, AllReduceSumEqualsSumOverRanks) {
  std::vector<float> values(1001);
  for (size_t i = 0; i < values.size(); ++i) values[i] = pattern(rank_, i);
  comm_->all_reduce(values.data(), values.size());
  for (size_t i = 0; i < values.size(); ++i) ASSERT_EQ(values[i], pattern_sum(world_, i)) << i;

  std::vector<double> doubles = {0.25 * (rank_ + 1), -1.0 * rank_};
  comm_->all_reduce(doubles.data(), doubles.size(), {ReduceOp::kSum, DataType::kFloat64});
  EXPECT_DOUBLE_EQ(doubles[0], 0.25 * world_ * (world_ + 1) / 2);
  EXPECT_DOUBLE_EQ(doubles[1], -1.0 * world_ * (world_ - 1) / 2);

  // int64 beyond 2^32: the sum must not pass through a narrower type.
  int64_t big = (int64_t{1} << 40) + rank_;
  comm_->all_reduce(&big, 1, {ReduceOp::kSum, DataType::kInt64});
  EXPECT_EQ(big, (int64_t{1} << 40) * world_ + int64_t{world_} * (world_ - 1) / 2);
}

TEST_P(CommTest, AllReduceAvgDividesByWorldSize) {
  std::vector<float> values(257);
  for (size_t i = 0; i < values.size(); ++i) values[i] = 2.0f * rank_ + static_cast<float>(i % 3);
  comm_->all_reduce(values.data(), values.size(), {ReduceOp::kAvg, DataType::kFloat32});
  // mean over r of 2r = W - 1
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_FLOAT_EQ(values[i], static_cast<float>(world_ - 1) + static_cast<float>(i % 3)) << i;
  }
  int64_t integer = 1;
  EXPECT_THROW(comm_->all_reduce(&integer, 1, {ReduceOp::kAvg, DataType::kInt64}), CommError);
}

TEST_P(CommTest, ReduceScatterGivesEachRankItsSummedSlice) {
  const size_t count = 37;
  std::vector<float> send(count * world_);
  for (size_t j = 0; j < send.size(); ++j) send[j] = pattern(rank_, j);
  std::vector<float> recv(count, -1.0f);
  comm_->reduce_scatter(send.data(), recv.data(), count);
  for (size_t i = 0; i < count; ++i) {
    ASSERT_EQ(recv[i], pattern_sum(world_, rank_ * count + i)) << i;
  }
  comm_->reduce_scatter(send.data(), recv.data(), count, {ReduceOp::kAvg, DataType::kFloat32});
  for (size_t i = 0; i < count; ++i) {
    ASSERT_FLOAT_EQ(recv[i], pattern_sum(world_, rank_ * count + i) / world_) << i;
  }
}

TEST_P(CommTest, ReduceScatterInPlaceLeavesResultInOwnSlice) {
  const size_t count = 5;
  std::vector<float> buf(count * world_);
  for (size_t j = 0; j < buf.size(); ++j) buf[j] = pattern(rank_, j);
  float* own = buf.data() + rank_ * count;
  comm_->reduce_scatter(buf.data(), own, count);
  for (size_t i = 0; i < count; ++i) ASSERT_EQ(own[i], pattern_sum(world_, rank_ * count + i)) << i;
}

TEST_P(CommTest, AllGatherConcatenatesRanksInOrder) {
  const size_t count = 11;
  std::vector<float> send(count);
  for (size_t i = 0; i < count; ++i)
    send[i] = static_cast<float>(rank_ * 1000 + static_cast<int>(i));
  std::vector<float> recv(count * world_, -1.0f);
  comm_->all_gather(send.data(), recv.data(), count);
  for (int r = 0; r < world_; ++r) {
    for (size_t i = 0; i < count; ++i) {
      ASSERT_EQ(recv[r * count + i], static_cast<float>(r * 1000 + static_cast<int>(i)));
    }
  }
  // In place: this rank's part already sits at its offset of recv.
  std::vector<float> in_place(count * world_, -1.0f);
  std::copy(send.begin(), send.end(), in_place.begin() + rank_ * count);
  comm_->all_gather(in_place.data() + rank_ * count, in_place.data(), count);
  EXPECT_EQ(in_place, recv);
}

TEST_P(CommTest, BroadcastCopiesRootBufferToEveryRank) {
  const int root = world_ - 1;
  std::vector<double> buf(64, -1.0);
  if (rank_ == root) {
    for (size_t i = 0; i < buf.size(); ++i) buf[i] = 0.5 * static_cast<double>(i);
  }
  comm_->broadcast(buf.data(), buf.size(), DataType::kFloat64, root);
  for (size_t i = 0; i < buf.size(); ++i) ASSERT_EQ(buf[i], 0.5 * static_cast<double>(i)) << i;
  EXPECT_THROW(comm_->broadcast(buf.data(), 1, DataType::kFloat64, world_), CommError);
}

TEST_P(CommTest, CountersCountEveryCollective) {
  float value = 1.0f;
  std::vector<float> gathered(world_);
  comm_->all_reduce(&value, 1);
  comm_->all_gather(&value, gathered.data(), 1);
  comm_->broadcast(&value, 1, DataType::kFloat32, 0);
  comm_->barrier();
  comm_->all_reduce_async(&value, 1, {})->wait(60s);
  EXPECT_EQ(comm_->counters().collectives, 5);
  // Plain collectives are not gradient traffic: only GradReducer counts that.
  EXPECT_EQ(comm_->counters().gradient_collectives, 0);
  EXPECT_EQ(comm_->counters().bytes_reduced, 0);
}

// Issued collectives finish while this thread computes, without a call to wait():
// the back end progresses them on its own (the overlap the trainer relies on).
TEST_P(CommTest, AsyncCollectivesCompleteWhileCallerComputes) {
  const size_t count = 1 << 18;
  std::vector<std::vector<float>> buffers(3, std::vector<float>(count));
  std::vector<std::unique_ptr<Work>> works;
  for (size_t b = 0; b < buffers.size(); ++b) {
    for (size_t i = 0; i < count; ++i) buffers[b][i] = pattern(rank_, i + b);
    works.push_back(comm_->all_reduce_async(buffers[b].data(), count, {}));
  }
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  double busy_work = 0;  // stands in for the rest of the backward
  size_t completed = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < 10000; ++i) busy_work += 1e-9 * i;
    completed = 0;
    for (auto& work : works) completed += work->is_completed() ? 1 : 0;
    if (completed == works.size()) break;
  }
  EXPECT_EQ(completed, works.size()) << "collectives did not progress without wait()";
  EXPECT_GT(busy_work, 0.0);
  for (auto& work : works) work->wait(60s);
  for (size_t b = 0; b < buffers.size(); ++b) {
    for (size_t i = 0; i < count; i += 997) ASSERT_EQ(buffers[b][i], pattern_sum(world_, i + b));
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, CommTest,
                         ::testing::Values(CommBackend::kSingle, CommBackend::kMpi),
                         [](const auto& info) { return commtest::backend_label(info.param); });

// A rank that arrives after the timeout makes wait() throw on the others, naming the
// collective, the rank, the optimizer step and the timeout; the collective itself is
// still intact and completes once the late rank joins.
TEST(MpiTimeoutTest, LateRankMakesWaitThrowNamingRankAndStep) {
  Communicator& comm = commtest::world();
  if (comm.world_size() < 2) GTEST_SKIP() << "needs at least 2 ranks (run under mpirun -np 2)";
  comm.set_step(42);
  const int late_rank = 1;
  float value = static_cast<float>(comm.rank() + 1);
  if (comm.rank() == late_rank) {
    std::this_thread::sleep_for(2000ms);
    comm.all_reduce(&value, 1);
  } else {
    auto work = comm.all_reduce_async(&value, 1, {});
    const auto start = std::chrono::steady_clock::now();
    try {
      work->wait(300ms);
      ADD_FAILURE() << "wait() returned although rank " << late_rank << " had not joined";
    } catch (const CommError& error) {
      const std::string message = error.what();
      EXPECT_NE(message.find("all_reduce"), std::string::npos) << message;
      EXPECT_NE(message.find("rank " + std::to_string(comm.rank())), std::string::npos) << message;
      EXPECT_NE(message.find("optimizer step 42"), std::string::npos) << message;
      EXPECT_NE(message.find("300 ms"), std::string::npos) << message;
    }
    const auto waited = std::chrono::steady_clock::now() - start;
    EXPECT_LT(waited, 1500ms) << "the timeout did not fire on time";
    work->wait(60s);
  }
  EXPECT_EQ(value, static_cast<float>(comm.world_size() * (comm.world_size() + 1) / 2));
  comm.set_step(0);
}

TEST(LaunchDetectionTest, LaunchedUnderMpiReadsLauncherEnvironment) {
  const char* names[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_PROCID"};
  std::vector<std::pair<std::string, std::string>> saved;
  for (const char* name : names) {
    if (const char* value = std::getenv(name)) saved.emplace_back(name, value);
    unsetenv(name);
  }
  EXPECT_FALSE(launched_under_mpi());
  for (const char* name : names) {
    setenv(name, "2", 1);
    EXPECT_TRUE(launched_under_mpi()) << name;
    unsetenv(name);
  }
  for (const auto& [name, value] : saved) setenv(name.c_str(), value.c_str(), 1);
}

// Only a build without CUDA has no NCCL back end to refuse (one with CUDA runs NcclTest).
#ifndef ACCUM_HAVE_CUDA
TEST(FactoryTest, NcclWithoutCudaIsAClearError) {
  try {
    make_communicator(CommBackend::kNccl);
    ADD_FAILURE() << "expected CommError";
  } catch (const CommError& error) {
    EXPECT_NE(std::string(error.what()).find("without CUDA"), std::string::npos) << error.what();
  }
}
#endif

}  // namespace
}  // namespace accum::comm
