// tests/daemon/job_store_cache_test.cpp — JobStore's read cache never serves a
// stale record: each kind of write is visible to the very next get() and
// transitions() after both were cached, a refused write changes nothing, and
// the database (a second store opened on the file) agrees with the cache.
#include <unistd.h>

#include <filesystem>

#include "daemon/control/job_store.h"
#include "gtest/gtest.h"

namespace accum::control {
namespace {

using namespace accum::v1;

class JobStoreCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/jobstore-cache-test-XXXXXX";
    dir_ = mkdtemp(pattern);
    auto store = JobStore::open(dir_ + "/accumd.db");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    JobRecord record;
    record.id = *store_->next_id();
    record.name = "cached";
    record.spec.set_max_steps(9);
    record.job_dir = dir_ + "/jobs/" + record.id;
    ASSERT_TRUE(store_->insert(record, "submitted").ok());
    id_ = record.id;
    warm();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  // Reads the job so that the next read would come from the cache.
  void warm() {
    ASSERT_TRUE(store_->get(id_).ok());
    ASSERT_TRUE(store_->transitions(id_).ok());
  }
  JobRecord get() { return *store_->get(id_); }

  std::string dir_;
  std::string id_;
  std::unique_ptr<JobStore> store_;
};

TEST_F(JobStoreCacheTest, EveryWriteIsVisibleToTheNextRead) {
  ASSERT_TRUE(store_->transition(id_, STARTING, "launch", "attempt 1").ok());
  EXPECT_EQ(get().state, STARTING);
  EXPECT_EQ(get().message, "attempt 1");
  EXPECT_EQ(store_->transitions(id_)->size(), 2u);
  warm();

  ASSERT_TRUE(store_->set_process(id_, 4242, 777, 3).ok());
  EXPECT_EQ(get().launcher_pid, 4242);
  EXPECT_EQ(get().launcher_start_ticks, 777);
  EXPECT_EQ(get().attempt, 3);
  warm();

  ASSERT_TRUE(store_->set_restarts(id_, 2).ok());
  EXPECT_EQ(get().restarts, 2);
  warm();

  StepMetrics metrics;
  metrics.set_step(5);
  metrics.set_loss(3.25);
  ASSERT_TRUE(store_->set_progress(id_, metrics).ok());
  EXPECT_EQ(get().last_metrics.step(), 5);
  EXPECT_EQ(get().last_metrics.loss(), 3.25);
  warm();

  ASSERT_TRUE(store_->set_latest_checkpoint(id_, 4).ok());
  EXPECT_EQ(get().latest_checkpoint_step, 4);
  warm();

  ASSERT_TRUE(store_->transition(id_, RUNNING, "worker_hello", "").ok());
  const auto history = store_->transitions(id_);
  ASSERT_EQ(history->size(), 3u);
  EXPECT_EQ(history->back().state(), RUNNING);

  // The file says the same as the cache.
  auto reopened = JobStore::open(dir_ + "/accumd.db");
  ASSERT_TRUE(reopened.ok());
  const auto from_file = (*reopened)->get(id_);
  ASSERT_TRUE(from_file.ok());
  const auto cached = get();
  EXPECT_EQ(from_file->state, cached.state);
  EXPECT_EQ(from_file->launcher_pid, cached.launcher_pid);
  EXPECT_EQ(from_file->restarts, cached.restarts);
  EXPECT_EQ(from_file->last_metrics.step(), cached.last_metrics.step());
  EXPECT_EQ(from_file->latest_checkpoint_step, cached.latest_checkpoint_step);
  EXPECT_EQ(from_file->updated_ms, cached.updated_ms);
  EXPECT_EQ((*reopened)->transitions(id_)->size(), 3u);
}

TEST_F(JobStoreCacheTest, RefusedTransitionChangesNothing) {
  // QUEUED -> SUCCEEDED is not a transition the state machine allows.
  const auto status = store_->transition(id_, SUCCEEDED, "bogus", "should not stick");
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_EQ(get().state, QUEUED);
  EXPECT_NE(get().message, "should not stick");
  EXPECT_EQ(store_->transitions(id_)->size(), 1u);
}

TEST_F(JobStoreCacheTest, UnknownIdIsNotFoundAndNotCached) {
  EXPECT_EQ(store_->get("job-999999").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->get("job-999999").status().code(), absl::StatusCode::kNotFound);
  JobRecord later;
  later.id = *store_->next_id();  // job-000002
  later.name = "later";
  ASSERT_TRUE(store_->insert(later, "submitted").ok());
  ASSERT_TRUE(store_->get(later.id).ok());
}

}  // namespace
}  // namespace accum::control
