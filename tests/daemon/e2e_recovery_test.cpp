// tests/daemon/e2e_recovery_test.cpp — supervision: a rank killed with SIGKILL
// is restarted from the latest checkpoint and the loss curve continues; accumd
// killed with SIGKILL mid-job comes back with the job record intact and the job
// finishes; a worker that rejects its input fails the job without restarts, on one
// rank or several; max_restarts 0 means no restart, unset the daemon's default.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "gtest/gtest.h"
#include "tests/daemon/daemon_harness.h"

namespace accum::testing {
namespace {

using accum::v1::JobStatus;

TEST(DaemonRecovery, KilledRankRestartsFromCheckpointAndLossCurveContinues) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(2)));
  JobStatus job;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("phoenix", 60, 2, 10), &job).ok());

  // Watch from the start: every metrics event of both attempts, in arrival order.
  std::mutex mutex;
  std::vector<std::pair<int64_t, double>> watched;
  std::vector<accum::v1::JobState> states;
  size_t restart_index = SIZE_MAX;  // metrics events seen before RESTARTING arrived
  std::thread watcher([&] {
    accum::v1::WatchJobRequest request;
    request.set_id(job.id());
    auto context = daemon.context(240);
    auto reader = daemon.stub().WatchJob(context.get(), request);
    accum::v1::JobEvent event;
    while (reader->Read(&event)) {
      std::lock_guard lock(mutex);
      if (event.has_metrics()) watched.emplace_back(event.metrics().step(), event.metrics().loss());
      if (event.has_status()) {
        states.push_back(event.status().state());
        if (event.status().state() == accum::v1::RESTARTING && restart_index == SIZE_MAX) {
          restart_index = watched.size();
        }
      }
    }
  });
  const auto running = daemon.wait_for(job.id(), [](const JobStatus& j) {
    return j.state() == accum::v1::RUNNING && j.last_metrics().step() >= 14;
  });
  const auto pids = daemon.worker_pids(running.job_dir());
  ASSERT_EQ(pids.size(), 2u);
  ASSERT_EQ(kill(pids[1], SIGKILL), 0);  // rank 1

  const auto done = daemon.wait_for(
      job.id(), [](const JobStatus& j) { return j.state() == accum::v1::SUCCEEDED; },
      std::chrono::seconds(180));
  watcher.join();
  ASSERT_EQ(done.state(), accum::v1::SUCCEEDED) << done.message();
  EXPECT_EQ(done.restarts(), 1);
  bool restarted = false;
  for (const auto& t : done.transitions()) {
    if (t.state() == accum::v1::RESTARTING) {
      restarted = true;
      EXPECT_NE(t.message().find("restart 1 of"), std::string::npos) << t.message();
    }
  }
  EXPECT_TRUE(restarted);
  EXPECT_NE(std::find(states.begin(), states.end(), accum::v1::RESTARTING), states.end());

  // The second attempt resumes right after a checkpoint (a multiple of 10) and
  // repeats the steps after it with bit-identical losses. (When the kill lands just
  // after a checkpoint, there is nothing to repeat: it resumes at the next step.)
  ASSERT_LT(restart_index, watched.size()) << "no metrics after the restart";
  std::map<int64_t, double> first_attempt;
  for (size_t i = 0; i < restart_index; ++i) first_attempt[watched[i].first] = watched[i].second;
  ASSERT_FALSE(first_attempt.empty());
  const int64_t resumed_at = watched[restart_index].first;
  EXPECT_EQ((resumed_at - 1) % 10, 0) << "resumed at step " << resumed_at;
  EXPECT_GE(resumed_at, 11);
  EXPECT_LE(resumed_at, first_attempt.rbegin()->first + 1) << "steps were skipped";
  for (size_t j = restart_index; j < watched.size(); ++j) {
    if (auto it = first_attempt.find(watched[j].first); it != first_attempt.end()) {
      EXPECT_EQ(it->second, watched[j].second) << "step " << watched[j].first;
    }
    if (j > restart_index) {
      EXPECT_EQ(watched[j].first, watched[j - 1].first + 1);
    }
  }
  EXPECT_EQ(watched.back().first, 60);
  // The metrics file holds each step once, 1..60.
  const auto rows = read_metrics(done.job_dir() + "/metrics.jsonl");
  ASSERT_EQ(rows.size(), 60u);
  for (size_t k = 0; k < rows.size(); ++k) EXPECT_EQ(rows[k].first, static_cast<int64_t>(k + 1));
}

TEST(DaemonRecovery, KilledDaemonRestartsWithJobIntactAndJobFinishes) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(2)));
  JobStatus job;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("survivor", 150, 1, 50), &job).ok());
  const auto before = daemon.wait_for(job.id(), [](const JobStatus& j) {
    return j.state() == accum::v1::RUNNING && j.last_metrics().step() >= 3;
  });
  ASSERT_EQ(before.state(), accum::v1::RUNNING);
  const auto pids_before = daemon.worker_pids(before.job_dir());
  ASSERT_EQ(pids_before.size(), 1u);

  daemon.kill9();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_TRUE(daemon.start(with_slots(2)));

  const auto after = daemon.get(job.id());
  EXPECT_EQ(after.id(), before.id());
  EXPECT_EQ(after.name(), "survivor");
  EXPECT_EQ(after.spec().SerializeAsString(), before.spec().SerializeAsString());
  ASSERT_GE(after.transitions_size(), before.transitions_size());
  for (int k = 0; k < before.transitions_size(); ++k) {
    EXPECT_EQ(after.transitions(k).SerializeAsString(), before.transitions(k).SerializeAsString());
  }
  const auto done = daemon.wait_for(
      job.id(), [](const JobStatus& j) { return j.state() == accum::v1::SUCCEEDED; },
      std::chrono::seconds(180));
  ASSERT_EQ(done.state(), accum::v1::SUCCEEDED) << done.message();
  EXPECT_EQ(done.restarts(), 0) << "the running worker was re-attached, not restarted";
  const auto rows = read_metrics(done.job_dir() + "/metrics.jsonl");
  ASSERT_EQ(rows.size(), 150u);
  EXPECT_EQ(rows.back().first, 150);
}

// Submits, on `world_size` ranks, a spec whose nanoGPT .bin has an odd size: it passes
// submit (the file exists) but not the workers' header check, which exits 2 (a bad
// data file, the same on every rerun); under mpirun the rank ends the job with that
// code. Expects FAILED with no restart, the worker's error on the message's first line.
void expect_rejected_input_fails_without_restarts(int world_size) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(world_size)));
  const std::string data = daemon.dir() + "/odd.bin";
  std::ofstream(data, std::ios::binary) << std::string(4097, 'a');
  std::string spec = daemon.spec_json("doomed", 5, world_size, 0, R"("max_restarts": 3)");
  const auto train_at = spec.find(R"("train": ")") + 10;
  spec.replace(train_at, spec.find('"', train_at) - train_at, data);
  const auto format_at = spec.find("TEXT_BYTES");
  spec.replace(format_at, 10, "NANOGPT_BIN");
  JobStatus job;
  const auto submitted = daemon.submit(spec, &job);
  ASSERT_TRUE(submitted.ok()) << submitted.error_message();

  const auto done = daemon.wait_for(job.id(), [](const JobStatus& j) {
    return j.state() == accum::v1::FAILED || j.state() == accum::v1::SUCCEEDED ||
           j.state() == accum::v1::CANCELLED;
  });
  ASSERT_EQ(done.state(), accum::v1::FAILED) << done.message();
  EXPECT_EQ(done.restarts(), 0) << done.message();
  EXPECT_NE(done.message().find("exit code 2"), std::string::npos) << done.message();
  EXPECT_NE(done.message().find("not restarted"), std::string::npos) << done.message();
  // The reason is the worker's own error line, on the message's first line.
  const std::string first_line = done.message().substr(0, done.message().find('\n'));
  EXPECT_NE(first_line.find(data + ": nanoGPT .bin holds uint16 tokens, so its size must be even, "
                                   "but it is 4097 bytes"),
            std::string::npos)
      << done.message();
  for (const auto& t : done.transitions()) {
    EXPECT_NE(t.state(), accum::v1::RESTARTING) << t.message();
  }
  ASSERT_GT(done.transitions_size(), 0);
  EXPECT_EQ(done.transitions(done.transitions_size() - 1).reason(), "bad_input");
  EXPECT_TRUE(std::filesystem::exists(done.job_dir() + "/logs/attempt-1"));
  EXPECT_FALSE(std::filesystem::exists(done.job_dir() + "/logs/attempt-2"))
      << "a second attempt was launched";
}

TEST(DaemonRecovery, WorkerRejectingItsInputFailsTheJobAtOnceWithoutRestarts) {
  expect_rejected_input_fails_without_restarts(1);
}

TEST(DaemonRecovery, RanksRejectingTheirInputFailTheJobAtOnceWithoutRestarts) {
  expect_rejected_input_fails_without_restarts(2);
}

// SIGKILLs rank 0 of a job once it runs and has reported `after_step` steps.
void kill_worker_when_running(DaemonHarness& daemon, const std::string& id, int64_t after_step) {
  const auto running = daemon.wait_for(id, [&](const JobStatus& j) {
    return j.state() == accum::v1::RUNNING && j.last_metrics().step() >= after_step;
  });
  ASSERT_EQ(running.state(), accum::v1::RUNNING) << running.message();
  const auto pids = daemon.worker_pids(running.job_dir());
  ASSERT_EQ(pids.size(), 1u);
  ASSERT_EQ(kill(pids[0], SIGKILL), 0);
}

TEST(DaemonRecovery, MaxRestartsZeroNeverRestartsWhileUnsetTakesTheDaemonDefault) {
  DaemonHarness daemon;
  DaemonOptions options = with_slots(2);
  options.extra_args = {"--max-restarts", "1"};
  ASSERT_TRUE(daemon.start(options));
  JobStatus never;
  ASSERT_TRUE(
      daemon.submit(daemon.spec_json("never", 100000, 1, 0, R"("max_restarts": 0)"), &never).ok());
  JobStatus again;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("again", 300, 1, 100), &again).ok());
  // Each job shows the number it runs under: its own 0, and the daemon's flag for unset.
  EXPECT_TRUE(never.spec().has_max_restarts());
  EXPECT_EQ(never.spec().max_restarts(), 0);
  EXPECT_TRUE(again.spec().has_max_restarts());
  EXPECT_EQ(again.spec().max_restarts(), 1);

  // "again" first: it must not finish before the kill ("never" runs until killed).
  kill_worker_when_running(daemon, again.id(), 2);
  kill_worker_when_running(daemon, never.id(), 2);

  const auto failed = daemon.wait_for(never.id(), [](const JobStatus& j) {
    return j.state() == accum::v1::FAILED || j.state() == accum::v1::SUCCEEDED ||
           j.state() == accum::v1::RESTARTING;
  });
  ASSERT_EQ(failed.state(), accum::v1::FAILED) << failed.message();
  EXPECT_EQ(failed.restarts(), 0);
  EXPECT_NE(failed.message().find("signal 9"), std::string::npos) << failed.message();
  EXPECT_NE(failed.message().find("not restarted: max_restarts is 0"), std::string::npos)
      << failed.message();
  for (const auto& t : failed.transitions()) {
    EXPECT_NE(t.state(), accum::v1::RESTARTING) << t.message();
  }
  EXPECT_FALSE(std::filesystem::exists(failed.job_dir() + "/logs/attempt-2"))
      << "a second attempt was launched";

  const auto done = daemon.wait_for(
      again.id(), [](const JobStatus& j) { return j.state() == accum::v1::SUCCEEDED; },
      std::chrono::seconds(180));
  ASSERT_EQ(done.state(), accum::v1::SUCCEEDED) << done.message();
  EXPECT_EQ(done.restarts(), 1);
  int restarts_seen = 0;
  for (const auto& t : done.transitions()) {
    if (t.state() != accum::v1::RESTARTING) continue;
    ++restarts_seen;
    EXPECT_NE(t.message().find("restart 1 of 1 "), std::string::npos) << t.message();
  }
  EXPECT_EQ(restarts_seen, 1);
}

}  // namespace
}  // namespace accum::testing
