// tests/daemon/e2e_recovery_test.cpp — supervision: a rank killed with SIGKILL
// is restarted from the latest checkpoint and the loss curve continues; accumd
// killed with SIGKILL mid-job comes back with the job record intact and the job
// finishes, also one whose graceful cancel met its last step while accumd was down;
// a worker that rejects its input fails the job without restarts, on one
// rank or several; max_restarts 0 means no restart, unset the daemon's default; watches
// ride out an accumd restart; a second accumd on the same state dir is refused. (A full
// disk: e2e_full_disk_test.cpp.)
#include <signal.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
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
  const auto running = daemon.wait_running(job.id(), 14);
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
  const auto before = daemon.wait_running(job.id(), 3);
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

// A job whose worker finishes while accumd is down told nobody its last steps: the
// restarted accumd reads them back from the metrics file, so the job ends SUCCEEDED at
// step max_steps, not at the step accumd last heard of.
TEST(DaemonRecovery, JobThatEndsWhileAccumdIsDownShowsItsFinalStep) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(1)));
  JobStatus job;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("unseen-end", 300, 1, 100), &job).ok());
  const auto before = daemon.wait_running(job.id(), 3);
  ASSERT_EQ(before.state(), accum::v1::RUNNING);
  daemon.kill9();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!daemon.worker_pids(before.job_dir()).empty() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(daemon.worker_pids(before.job_dir()).empty()) << "the worker did not finish";
  ASSERT_LT(before.last_metrics().step(), 300);
  ASSERT_TRUE(daemon.start(with_slots(1)));
  const auto done = daemon.wait_for(
      job.id(), [](const JobStatus& j) { return j.state() == accum::v1::SUCCEEDED; },
      std::chrono::seconds(60));
  ASSERT_EQ(done.state(), accum::v1::SUCCEEDED) << done.message();
  EXPECT_EQ(done.last_metrics().step(), 300);
  EXPECT_EQ(done.restarts(), 0);
}

// A graceful cancel is recorded (CANCELLING) during a job's last step, and accumd is killed
// before the worker ends: the worker finishes that step, which is max_steps, checkpoints it
// and exits 0 while accumd is down. The restarted accumd finds the launcher gone and its
// exit code 0 (reconcile), and the job trained to the end: SUCCEEDED, as when accumd sees
// the exit itself (DaemonLifecycle.GracefulCancelDuringTheLastStepEndsSucceeded), never
// stuck in CANCELLING with no process. Each step takes seconds (320 micro-batches of a
// 4-layer model), so the cancel, sent once step 1 is reported, and the kill that follows it
// at once both land inside step 2.
TEST(DaemonRecovery, CancelDuringTheLastStepThenAccumdDiesEndsSucceededAfterTheRestart) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(1)));
  JobStatus job;
  ASSERT_TRUE(daemon.submit(daemon.slow_spec_json("last-step-unseen", 2), &job).ok());
  const JobStatus running = daemon.wait_running(job.id(), 1);
  ASSERT_EQ(running.state(), accum::v1::RUNNING) << running.message();
  JobStatus reply;
  const auto status = daemon.cancel(job.id(), /*force=*/false, &reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(reply.state(), accum::v1::CANCELLING) << "the cancel did not find step 2 running";
  daemon.kill9();
  {
    std::ifstream in(daemon.dir() + "/accumd.log");
    const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_EQ(log.find("-> SUCCEEDED"), std::string::npos)
        << "the first accumd saw the job end: the exit was not left to the restarted one";
  }
  const std::string exit_code = running.job_dir() + "/logs/attempt-1/exit_code";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!std::filesystem::exists(exit_code) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(std::filesystem::exists(exit_code))
      << "the worker did not finish while accumd was down";

  ASSERT_TRUE(daemon.start(with_slots(1)));
  const auto done = daemon.wait_for(
      job.id(), [](const JobStatus& j) { return j.state() != accum::v1::CANCELLING; },
      std::chrono::seconds(30));
  EXPECT_EQ(done.state(), accum::v1::SUCCEEDED) << done.message();
  EXPECT_NE(done.message().find("a cancel arrived as it ended"), std::string::npos)
      << done.message();
  EXPECT_EQ(done.latest_checkpoint_step(), 2);
  EXPECT_EQ(done.last_metrics().step(), 2);
  EXPECT_EQ(done.restarts(), 0);
}

// accumd restarted with fewer --slots than a queued job needs: that job waits, says why,
// and does not hold up the smaller jobs queued behind it.
TEST(DaemonRecovery, QueuedJobLargerThanTheSlotsAfterARestartDoesNotBlockTheQueue) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(2)));
  JobStatus running, big, small;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("running", 100000, 2, 0), &running).ok());
  ASSERT_EQ(daemon.wait_running(running.id(), 1).state(), accum::v1::RUNNING);
  ASSERT_TRUE(daemon.submit(daemon.spec_json("big", 5, 2, 0), &big).ok());
  ASSERT_TRUE(daemon.submit(daemon.spec_json("small", 5, 1, 0), &small).ok());
  daemon.stop();
  ASSERT_TRUE(daemon.start(with_slots(1)));
  std::string output;
  ASSERT_EQ(run_accumctl(daemon, {"cancel", running.id(), "--force"}, &output), 0) << output;
  const JobStatus done = daemon.wait_for(small.id(), [](const JobStatus& j) {
    return j.state() == accum::v1::SUCCEEDED || j.state() == accum::v1::FAILED;
  });
  EXPECT_EQ(done.state(), accum::v1::SUCCEEDED) << done.message();
  const JobStatus waiting = daemon.get(big.id());
  EXPECT_EQ(waiting.state(), accum::v1::QUEUED);
  EXPECT_NE(waiting.message().find("it needs 2 slots, and this accumd has 1 (--slots)"),
            std::string::npos)
      << waiting.message();
}

// Two accumd on one state dir would both reconcile and supervise its jobs. The second
// exits at once with 2, naming the lock file, and the first keeps serving: its running
// job finishes unrestarted and it takes new submits. (The restart tests above show that
// the lock goes with the process, also when its workers live on.)
TEST(DaemonRecovery, SecondAccumdOnTheSameStateDirExitsAndTheFirstKeepsServing) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(1)));
  JobStatus job;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("first", 40, 1, 0), &job).ok());
  ASSERT_EQ(
      daemon.wait_for(job.id(), [](const JobStatus& j) { return j.state() == accum::v1::RUNNING; })
          .state(),
      accum::v1::RUNNING);
  const std::string state_dir = daemon.dir() + "/state";
  // `timeout`: a second accumd that was let in would serve until killed (exit 124).
  std::string output;
  const int exit_code =
      run_command("timeout 20 " + daemon.build_dir() + "/bin/accumd --listen 127.0.0.1:0 " +
                      "--state-dir '" + state_dir + "' --token-file '" + daemon.token_file() + "'",
                  &output);
  EXPECT_EQ(exit_code, 2) << output;
  EXPECT_NE(output.find("another accumd"), std::string::npos) << output;
  EXPECT_NE(output.find(state_dir + "/accumd.lock"), std::string::npos) << output;

  auto finished = [](const JobStatus& j) {
    return j.state() == accum::v1::SUCCEEDED || j.state() == accum::v1::FAILED;
  };
  const JobStatus done = daemon.wait_for(job.id(), finished);
  EXPECT_EQ(done.state(), accum::v1::SUCCEEDED) << done.message();
  EXPECT_EQ(done.restarts(), 0);
  JobStatus next;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("next", 3, 1, 0), &next).ok());
  EXPECT_EQ(daemon.wait_for(next.id(), finished).state(), accum::v1::SUCCEEDED);
}

// accumd is killed and restarted under a running job while `accumctl watch` and
// `accumctl logs -f` follow it and another client watches afresh: the watch reconnects and
// goes on from the step it last showed (each step once, in order, to the end); logs -f
// reconnects and prints every log line once (what `accumctl logs` prints afterwards); and
// the new accumd's WatchJob replays the job's whole history (read back from the metrics
// file on re-attaching) with no step repeated by the worker's link catching up.
TEST(DaemonRecovery, WatchAndLogsFollowTheJobAcrossAnAccumdRestart) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(1)));
  constexpr int kSteps = 3000;
  JobStatus job;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("watched", kSteps, 1, 0), &job).ok());
  // The watch runs to the job's end, even if an assertion below returns early.
  std::string watch_output;
  std::atomic<bool> watch_printed{false}, follow_printed{false};
  auto watch_exit = std::async(std::launch::async, [&] {
    return run_accumctl(daemon, {"watch", job.id()}, &watch_output, true, &watch_printed);
  });
  std::string follow_output;
  auto follow_exit = std::async(std::launch::async, [&] {
    return run_accumctl(daemon, {"logs", job.id(), "-f"}, &follow_output, true, &follow_printed);
  });
  // accumd goes down only once both clients have reached it (printed something): one that
  // first connects after the kill finds no accumd, which is an error, not a reconnect. On a
  // loaded machine the job reached step 20 before accumctl had started.
  const auto before = daemon.wait_for(job.id(), [&](const JobStatus& j) {
    const bool ended = j.state() >= accum::v1::SUCCEEDED;  // SUCCEEDED, FAILED, CANCELLED
    return ended || (j.state() == accum::v1::RUNNING && j.last_metrics().step() >= 20 &&
                     watch_printed.load() && follow_printed.load());
  });
  ASSERT_EQ(before.state(), accum::v1::RUNNING) << before.message();
  ASSERT_TRUE(watch_printed.load() && follow_printed.load()) << "accumctl never got through";
  daemon.kill9();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  ASSERT_TRUE(daemon.start(with_slots(1)));

  // Once the worker's link is back (the step accumd reports passes what the metrics file
  // held at the restart), a fresh watch on the new accumd, while the job still runs.
  const int64_t file_steps =
      static_cast<int64_t>(read_metrics(before.job_dir() + "/metrics.jsonl").size());
  const auto relinked = daemon.wait_for(job.id(), [&](const JobStatus& j) {
    return j.last_metrics().step() > file_steps + 20 || j.state() != accum::v1::RUNNING;
  });
  ASSERT_EQ(relinked.state(), accum::v1::RUNNING) << "the job ended before the check could run";
  const auto fresh_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::vector<int64_t> replayed;
  {
    accum::v1::WatchJobRequest request;
    request.set_id(job.id());
    auto context = daemon.context(60);
    auto reader = daemon.stub().WatchJob(context.get(), request);
    accum::v1::JobEvent event;
    while (reader->Read(&event)) {
      if (event.has_metrics()) replayed.push_back(event.metrics().step());
      if (!replayed.empty() && replayed.back() > relinked.last_metrics().step() + 50) {
        break;  // the replayed history and some live steps after it
      }
      if (std::chrono::steady_clock::now() > fresh_deadline) break;
    }
    context->TryCancel();
  }
  ASSERT_FALSE(replayed.empty());
  EXPECT_EQ(replayed.front(), 1) << "the history before the restart is missing";
  for (size_t i = 1; i < replayed.size(); ++i) {
    ASSERT_EQ(replayed[i], replayed[i - 1] + 1) << "at index " << i;
  }

  EXPECT_EQ(watch_exit.get(), 0) << watch_output;
  EXPECT_NE(watch_output.find("lost accumd"), std::string::npos) << watch_output;
  EXPECT_NE(watch_output.find("reconnected to accumd"), std::string::npos) << watch_output;
  std::vector<int64_t> shown;
  std::istringstream lines(watch_output);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("step ", 0) == 0) shown.push_back(std::atoll(line.c_str() + 5));
  }
  ASSERT_FALSE(shown.empty()) << watch_output;
  for (size_t i = 1; i < shown.size(); ++i) {
    ASSERT_GT(shown[i], shown[i - 1]) << "a step shown twice or out of order at line " << i;
  }
  EXPECT_EQ(shown.back(), kSteps);
  EXPECT_NE(watch_output.find(job.id() + " SUCCEEDED"), std::string::npos) << watch_output;

  EXPECT_EQ(follow_exit.get(), 0) << follow_output;
  EXPECT_NE(follow_output.find("reconnected to accumd"), std::string::npos) << follow_output;
  std::string all_logs;
  ASSERT_EQ(run_accumctl(daemon, {"logs", job.id()}, &all_logs), 0) << all_logs;
  auto log_lines = [](const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("[rank ", 0) == 0) lines.push_back(line);
    }
    return lines;
  };
  const auto followed = log_lines(follow_output), logged = log_lines(all_logs);
  EXPECT_GT(logged.size(), 100u);
  EXPECT_TRUE(followed == logged) << followed.size() << " lines followed, " << logged.size()
                                  << " in the log";
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

// A job whose training diverges (a loss that is not a number) would diverge again from its
// last checkpoint, bit for bit: accumd fails it at once, says why, and the job's checkpoints
// all hold finite weights.
TEST(DaemonRecovery, DivergedJobFailsWithoutRestartsAndKeepsOnlyFiniteCheckpoints) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start());
  std::string spec = daemon.spec_json("diverges", 200, 1, 1);
  const std::string optimizer = R"("lr": 0.003)";
  ASSERT_NE(spec.find(optimizer), std::string::npos);
  spec.replace(spec.find(optimizer), optimizer.size(),
               R"("lr": 10, "beta2": 0, "eps": 1e-30, "grad_clip": 0, "weight_decay": 0)");
  JobStatus job;
  const grpc::Status submitted = daemon.submit(spec, &job);
  ASSERT_TRUE(submitted.ok()) << submitted.error_message();
  const JobStatus done = daemon.wait_for(
      job.id(),
      [](const JobStatus& j) {
        return j.state() == accum::v1::SUCCEEDED || j.state() == accum::v1::FAILED;
      },
      std::chrono::seconds(120));
  ASSERT_EQ(done.state(), accum::v1::FAILED) << done.message();
  EXPECT_EQ(done.restarts(), 0);
  EXPECT_NE(done.message().find("training diverged"), std::string::npos) << done.message();
  EXPECT_NE(done.message().find("not restarted: a rerun would fail the same way"),
            std::string::npos)
      << done.message();
  // Every step that reported is finite, and a checkpoint (one per step) follows each of
  // them and no other: the diverged step was neither applied nor checkpointed.
  const auto rows = read_metrics(done.job_dir() + "/metrics.jsonl");
  ASSERT_FALSE(rows.empty());
  for (const auto& [step, loss] : rows) EXPECT_TRUE(std::isfinite(loss)) << "step " << step;
  std::vector<int64_t> checkpointed;
  for (const auto& entry : std::filesystem::directory_iterator(done.job_dir() + "/checkpoints")) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("step_", 0) == 0) checkpointed.push_back(std::stoll(name.substr(5)));
  }
  std::sort(checkpointed.begin(), checkpointed.end());
  ASSERT_FALSE(checkpointed.empty());
  EXPECT_EQ(checkpointed.size(), rows.size());
  EXPECT_EQ(checkpointed.back(), rows.back().first);
  EXPECT_EQ(done.latest_checkpoint_step(), rows.back().first);
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
