// tests/daemon/e2e_lifecycle_test.cpp — a job's life through a real accumd and
// real accum-worker processes: submit/watch to SUCCEEDED, checkpoint-now on a
// 2-rank mpirun job, graceful and forced cancel (also one that meets the job's end), FIFO queueing
// on one slot, a failed job whose logs quote bytes that are not UTF-8.
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "daemon/worker/io/checkpoint_dir.h"
#include "gtest/gtest.h"
#include "tests/daemon/daemon_harness.h"

namespace accum::testing {
namespace {

namespace fs = std::filesystem;
using accum::v1::JobState;
using accum::v1::JobStatus;

bool in_state(const JobStatus& job, JobState state) { return job.state() == state; }

TEST(DaemonLifecycle, SubmitRunsToSucceededAndWatchSeesEveryStep) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(2)));
  JobStatus job;
  auto status = daemon.submit(daemon.spec_json("watch-me", 12, 1, 5), &job);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(job.state() == accum::v1::QUEUED || job.state() == accum::v1::STARTING);

  accum::v1::WatchJobRequest request;
  request.set_id(job.id());
  auto context = daemon.context(120);
  auto reader = daemon.stub().WatchJob(context.get(), request);
  std::vector<JobState> states;
  std::vector<int64_t> steps;
  std::map<int64_t, double> watched_loss;
  accum::v1::JobEvent event;
  while (reader->Read(&event)) {
    if (event.has_status()) states.push_back(event.status().state());
    if (event.has_metrics()) {
      steps.push_back(event.metrics().step());
      watched_loss[event.metrics().step()] = event.metrics().loss();
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_FALSE(states.empty());
  EXPECT_EQ(states.back(), accum::v1::SUCCEEDED);
  EXPECT_NE(std::find(states.begin(), states.end(), accum::v1::RUNNING), states.end());
  std::vector<int64_t> expected(12);
  for (int i = 0; i < 12; ++i) expected[i] = i + 1;
  EXPECT_EQ(steps, expected) << "WatchJob must deliver every optimizer step once, in order";

  // The watched metrics are the worker's metrics file, step for step.
  const JobStatus done = daemon.get(job.id());
  const auto file_rows = read_metrics(done.job_dir() + "/metrics.jsonl");
  ASSERT_EQ(file_rows.size(), 12u);
  for (const auto& [step, loss] : file_rows) EXPECT_DOUBLE_EQ(watched_loss[step], loss) << step;
  EXPECT_EQ(done.last_metrics().step(), 12);
  EXPECT_EQ(done.latest_checkpoint_step(), 12);
  std::vector<JobState> history;
  for (const auto& t : done.transitions()) history.push_back(t.state());
  EXPECT_EQ(history, (std::vector<JobState>{accum::v1::QUEUED, accum::v1::STARTING,
                                            accum::v1::RUNNING, accum::v1::SUCCEEDED}));
  ASSERT_EQ(done.transitions_size(), 4);
  EXPECT_EQ(done.transitions(1).message(), "attempt 1 on 1 rank");
  EXPECT_EQ(done.transitions(2).message(), "attempt 1: 1 rank, from step 0");
}

TEST(DaemonLifecycle, CheckpointNowOnEveryRankOfTwoRankJob) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(2)));
  JobStatus job;
  auto status = daemon.submit(
      daemon.spec_json("ckpt-now", 100000, 2, 0, R"("distributed": {"zero_stage": 1})"), &job);
  ASSERT_TRUE(status.ok()) << status.error_message();
  auto running = daemon.wait_running(job.id(), 2);
  ASSERT_EQ(running.state(), accum::v1::RUNNING);
  ASSERT_GE(running.transitions_size(), 2);
  EXPECT_EQ(running.transitions(running.transitions_size() - 2).message(), "attempt 1 on 2 ranks");
  EXPECT_EQ(running.transitions().rbegin()->message(), "attempt 1: 2 ranks, from step 0");
  const int64_t step_before = running.last_metrics().step();

  accum::v1::CheckpointJobRequest request;
  request.set_id(job.id());
  accum::v1::CheckpointInfo info;
  auto context = daemon.context(120);
  status = daemon.stub().CheckpointJob(context.get(), request, &info);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GE(info.step(), step_before);
  EXPECT_EQ(fs::path(info.path()).filename().string(), accum::io::step_dir_name(info.step()));
  // Complete (manifest verifies) and written by both ranks (one optimizer shard each).
  EXPECT_TRUE(accum::io::verify_checkpoint(info.path()).ok());
  EXPECT_TRUE(fs::exists(info.path() + "/optimizer-rank00000-of-00002.safetensors"));
  EXPECT_TRUE(fs::exists(info.path() + "/optimizer-rank00001-of-00002.safetensors"));
  EXPECT_GT(info.bytes(), 0);

  accum::v1::ListCheckpointsRequest list_request;
  list_request.set_id(job.id());
  accum::v1::ListCheckpointsResponse list;
  auto list_context = daemon.context();
  ASSERT_TRUE(daemon.stub().ListCheckpoints(list_context.get(), list_request, &list).ok());
  ASSERT_GE(list.checkpoints_size(), 1);
  EXPECT_EQ(list.checkpoints(list.checkpoints_size() - 1).step(), info.step());

  ASSERT_TRUE(daemon.cancel(job.id(), /*force=*/true).ok());
  daemon.wait_for(job.id(), [](const JobStatus& j) { return in_state(j, accum::v1::CANCELLED); });
}

TEST(DaemonLifecycle, GracefulCancelEndsWithFinalCheckpoint) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(2)));
  JobStatus job;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("graceful", 100000, 1, 0), &job).ok());
  daemon.wait_running(job.id(), 3);
  JobStatus reply;
  auto status = daemon.cancel(job.id(), /*force=*/false, &reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(reply.state() == accum::v1::CANCELLING || reply.state() == accum::v1::CANCELLED);
  const auto done = daemon.wait_for(
      job.id(), [](const JobStatus& j) { return in_state(j, accum::v1::CANCELLED); });
  ASSERT_EQ(done.state(), accum::v1::CANCELLED);
  // The final checkpoint is the last step the worker finished.
  const auto rows = read_metrics(done.job_dir() + "/metrics.jsonl");
  ASSERT_FALSE(rows.empty());
  const auto checkpoints = accum::io::list_checkpoints(done.job_dir() + "/checkpoints");
  ASSERT_FALSE(checkpoints.empty());
  EXPECT_EQ(checkpoints.back().first, rows.back().first);
  EXPECT_TRUE(accum::io::verify_checkpoint(checkpoints.back().second).ok());
  EXPECT_EQ(done.latest_checkpoint_step(), rows.back().first);
  // A cancelled job cannot be cancelled again.
  EXPECT_EQ(daemon.cancel(job.id(), /*force=*/false, &reply).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

// A graceful cancel that arrives during the last step meets the job's own end: the worker
// finishes that step, which is max_steps, checkpoints it and exits. The job trained to the
// end, so it is SUCCEEDED (and says a cancel arrived), not CANCELLED: a `continue` of it
// would have nothing to train. Each step here takes seconds (320 micro-batches of a
// 4-layer model), so the cancel, sent once step 1 is reported, lands inside step 2.
JobStatus cancel_during_the_last_step(DaemonHarness& daemon) {
  JobStatus job;
  EXPECT_TRUE(daemon.submit(daemon.slow_spec_json("last-step", 2), &job).ok());
  daemon.wait_running(job.id(), 1);
  JobStatus reply;
  const auto status = daemon.cancel(job.id(), /*force=*/false, &reply);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(reply.state(), accum::v1::CANCELLING) << "the cancel did not find step 2 running";
  const auto done = daemon.wait_for(
      job.id(), [](const JobStatus& j) { return j.state() != accum::v1::CANCELLING; });
  EXPECT_EQ(done.latest_checkpoint_step(), 2);
  const auto rows = read_metrics(done.job_dir() + "/metrics.jsonl");
  EXPECT_EQ(rows.size(), 2u);
  return done;
}

TEST(DaemonLifecycle, GracefulCancelDuringTheLastStepEndsSucceeded) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(2)));
  const JobStatus done = cancel_during_the_last_step(daemon);
  EXPECT_EQ(done.state(), accum::v1::SUCCEEDED) << done.message();
  EXPECT_NE(
      done.message().find("finished (a cancel arrived as it ended); latest checkpoint step 2"),
      std::string::npos)
      << done.message();
  EXPECT_EQ(done.message().find("after it"), std::string::npos) << done.message();
}

// The same when the workers exit non-zero after the final checkpoint (a wrapper runs the
// real worker, then exits 1, as a rank failing in its MPI or NCCL teardown would): the
// training is complete, so SUCCEEDED, saying how they ended. It used to be CANCELLED.
TEST(DaemonLifecycle, CancelDuringTheLastStepOfWorkersFailingAfterItEndsSucceeded) {
  DaemonHarness daemon;
  const std::string wrapper = daemon.worker_failing_after_it();
  DaemonOptions options = with_slots(2);
  options.extra_args = {"--worker-bin", wrapper};
  ASSERT_TRUE(daemon.start(options));
  const JobStatus done = cancel_during_the_last_step(daemon);
  EXPECT_EQ(done.state(), accum::v1::SUCCEEDED) << done.message();
  EXPECT_NE(done.message().find("finished (a cancel arrived as it ended); latest checkpoint step 2 "
                                "(after it, the workers ended with exit code 1)"),
            std::string::npos)
      << done.message();
}

TEST(DaemonLifecycle, ForceCancelLeavesNoHalfWrittenCheckpoint) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(2)));
  JobStatus job;
  // A checkpoint every step, so the SIGKILL very likely lands inside one.
  ASSERT_TRUE(daemon.submit(daemon.spec_json("force", 100000, 2, 1), &job).ok());
  daemon.wait_running(job.id(), 3);
  ASSERT_TRUE(daemon.cancel(job.id(), /*force=*/true).ok());
  const auto done = daemon.wait_for(
      job.id(), [](const JobStatus& j) { return in_state(j, accum::v1::CANCELLED); },
      std::chrono::seconds(30));
  ASSERT_EQ(done.state(), accum::v1::CANCELLED);
  EXPECT_TRUE(daemon.worker_pids(done.job_dir()).empty()) << "every rank is killed";
  for (const auto& entry : fs::directory_iterator(done.job_dir() + "/checkpoints")) {
    const std::string name = entry.path().filename().string();
    EXPECT_NE(name.rfind(".tmp", 0), 0u) << "partial checkpoint left: " << name;
    if (name.rfind("step_", 0) == 0) {
      EXPECT_TRUE(accum::io::verify_checkpoint(entry.path().string()).ok()) << name;
    }
  }
  auto latest = accum::io::resolve_checkpoint(done.job_dir() + "/checkpoints", "latest");
  EXPECT_TRUE(latest.ok()) << latest.status().message();
}

TEST(DaemonLifecycle, SecondJobWaitsQueuedUntilTheSlotIsFree) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(1)));
  JobStatus first, second;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("first", 40, 1, 0), &first).ok());
  ASSERT_TRUE(daemon.submit(daemon.spec_json("second", 5, 1, 0), &second).ok());
  daemon.wait_for(first.id(), [](const JobStatus& j) { return in_state(j, accum::v1::RUNNING); });
  EXPECT_EQ(daemon.get(second.id()).state(), accum::v1::QUEUED);
  const auto first_done = daemon.wait_for(
      first.id(), [](const JobStatus& j) { return in_state(j, accum::v1::SUCCEEDED); });
  const auto second_done = daemon.wait_for(
      second.id(), [](const JobStatus& j) { return in_state(j, accum::v1::SUCCEEDED); });
  ASSERT_EQ(second_done.state(), accum::v1::SUCCEEDED);
  // The second job started only after the first one ended.
  int64_t first_end = 0, second_start = 0;
  for (const auto& t : first_done.transitions()) {
    if (t.state() == accum::v1::SUCCEEDED) first_end = t.time_unix_ms();
  }
  for (const auto& t : second_done.transitions()) {
    if (t.state() == accum::v1::STARTING) second_start = t.time_unix_ms();
  }
  EXPECT_GE(second_start, first_end);
}

// ListJobs pages are cut at 4 MiB as well as at page_size: 20 queued jobs whose specs list
// their corpus 6000 times (~220 KB each, under the 256 KiB a spec may have) come in two
// pages, and `accumctl list` shows every one of them. (At 300 such jobs one page would pass
// the 64 MiB a reply may have, and list would fail for every job.)
TEST(DaemonLifecycle, ListPagesAreCutByBytesSoJobsWithBigSpecsStillList) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(1)));
  JobStatus blocker;  // holds the one slot, so the big ones stay queued and never read data
  ASSERT_TRUE(daemon.submit(daemon.spec_json("blocker", 1000000, 1, 0), &blocker).ok());
  std::string spec = daemon.spec_json("big", 5, 1, 0);
  const std::string corpus = "\"" + daemon.dir() + "/corpus.txt\"";
  std::string many = "[" + corpus;
  for (int i = 1; i < 6000; ++i) many += ", " + corpus;
  spec.replace(spec.find(corpus), corpus.size(), many + "]");
  for (int i = 0; i < 20; ++i) {
    JobStatus job;
    ASSERT_TRUE(daemon.submit(spec, &job).ok()) << i;
  }
  accum::v1::ListJobsRequest request;
  request.set_page_size(1000);
  accum::v1::ListJobsResponse page;
  auto context = daemon.context();
  ASSERT_TRUE(daemon.stub().ListJobs(context.get(), request, &page).ok());
  EXPECT_LT(page.jobs_size(), 21);
  EXPECT_GT(page.jobs_size(), 1);
  EXPECT_LE(page.ByteSizeLong(), size_t{4 << 20} + (size_t{256} << 10) * 2);
  ASSERT_FALSE(page.next_page_token().empty());
  EXPECT_EQ(page.next_page_token(), page.jobs(page.jobs_size() - 1).id());
  std::string output;
  ASSERT_EQ(run_accumctl(daemon, {"list"}, &output), 0) << output.substr(0, 2000);
  std::set<std::string> listed;
  for (size_t at = output.find("job-"); at != std::string::npos; at = output.find("job-", at + 1)) {
    listed.insert(output.substr(at, 10));
  }
  EXPECT_EQ(listed.size(), 21u) << output.substr(0, 2000);
}

// accumd keeps a job's checkpoints and metrics in the job's folder, where its restarts and
// `continue` look. A spec that names other places (for accum-worker run by hand) is told so at
// submit, on accumctl's stderr and in the job's first transition; one that leaves them at
// accum-worker's defaults beside the spec, as the example specs do, gets no note.
TEST(DaemonLifecycle, ASpecsOwnCheckpointDirIsReplacedAndTheSubmitSaysSo) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(2)));
  const auto submit = [&](const std::string& name, const std::string& checkpoint_dir,
                          const std::string& metrics_path, std::string* output) {
    std::string json =
        daemon.spec_json(name, 2, 1, 0, "\"metrics_path\": \"" + metrics_path + "\"");
    const std::string checkpoint = "\"checkpoint\": {";
    json.replace(json.find(checkpoint), checkpoint.size(),
                 checkpoint + "\"dir\": \"" + checkpoint_dir + "\", ");
    const std::string path = daemon.dir() + "/" + name + ".json";
    std::ofstream(path) << json;
    EXPECT_EQ(run_accumctl(daemon, {"submit", path}, output), 0) << *output;
    return output->substr(0, output->find('\n'));  // stdout's id comes first
  };
  std::string output;
  const std::string moved = submit("moved", "mine/ckpt", "mine/m.jsonl", &output);
  const JobStatus job = daemon.wait_for(moved, ended);
  ASSERT_EQ(job.state(), accum::v1::SUCCEEDED) << job.message();
  const std::string note = "its checkpoints and metrics go to its folder, " + job.job_dir() +
                           ", where accumd keeps them for its restarts and `continue`, not to "
                           "the spec's checkpoint.dir " +
                           daemon.dir() + "/mine/ckpt and metrics_path " + daemon.dir() +
                           "/mine/m.jsonl (those apply to accum-worker run by hand)";
  EXPECT_NE(output.find("accumctl: " + moved + " " + note + "\n"), std::string::npos) << output;
  EXPECT_NE(job.transitions(0).message().find(note), std::string::npos)
      << job.transitions(0).message();
  EXPECT_TRUE(fs::exists(job.job_dir() + "/checkpoints/step_00000002/manifest.json"));
  EXPECT_FALSE(fs::exists(daemon.dir() + "/mine"));

  const std::string kept = submit("defaults", "checkpoints", "metrics.jsonl", &output);
  EXPECT_EQ(output.find("go to its folder"), std::string::npos) << output;
  EXPECT_EQ(daemon.wait_for(kept, ended).state(), accum::v1::SUCCEEDED);
}

// `accumctl list` cuts a long name to 20 characters, never inside a UTF-8 character, and
// pads it by characters: the STATE column starts at character 34 on every line.
TEST(DaemonLifecycle, ListLinesUpNamesInAnyScript) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(1)));
  JobStatus running, queued;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("plain", 1000000, 1, 0), &running).ok());
  const std::string name =
      "\xC3\x9C"
      "berpr\xC3\xBC"
      "fung der Gr\xC3\xB6\xC3\x9F"
      "e \xE2\x9C\x93";
  ASSERT_TRUE(daemon.submit(daemon.spec_json(name, 5, 1, 0), &queued).ok());
  std::string output;
  ASSERT_EQ(run_accumctl(daemon, {"list"}, &output), 0) << output;
  // The characters of a line (the bytes that do not continue a UTF-8 sequence), and where
  // `word` starts among them; -1 for a line that is not valid UTF-8 or lacks it.
  const auto char_index = [](const std::string& line, const std::string& word) -> long {
    const size_t at = line.find(word);
    if (at == std::string::npos) return -1;
    long chars = 0;
    for (size_t i = 0; i < at;) {
      const unsigned char lead = static_cast<unsigned char>(line[i]);
      const size_t length = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
      if (lead >= 0x80 && lead < 0xC0) return -1;  // a cut character's tail
      for (size_t k = 1; k < length; ++k) {
        if (i + k >= line.size() || (static_cast<unsigned char>(line[i + k]) & 0xC0) != 0x80) {
          return -1;  // a character cut short
        }
      }
      i += length;
      ++chars;
    }
    return chars;
  };
  std::istringstream lines(output);
  std::map<std::string, std::string> line_of;
  for (std::string line; std::getline(lines, line);) line_of[line.substr(0, 10)] = line;
  ASSERT_TRUE(line_of.count(running.id()) && line_of.count(queued.id())) << output;
  EXPECT_EQ(char_index(line_of["ID        "], "STATE"), 34) << output;
  EXPECT_EQ(char_index(line_of[queued.id()], "QUEUED"), 34) << line_of[queued.id()];
  const std::string& plain = line_of[running.id()];
  EXPECT_TRUE(char_index(plain, "STARTING") == 34 || char_index(plain, "RUNNING") == 34) << plain;
  // The name's first 20 characters, whole, then the column's space.
  const std::string first_20 =
      "\xC3\x9C"
      "berpr\xC3\xBC"
      "fung der Gr\xC3\xB6\xC3\x9F ";
  EXPECT_NE(line_of[queued.id()].find(first_20), std::string::npos) << line_of[queued.id()];
}

// A worker's error quotes a data file's name, which may be in any encoding (here Latin-1
// "caf\xE9"): the job's status, the list of every job, its watch and its logs must stay
// readable, with the stray byte shown as U+FFFD, not end in a reply no client can parse.
TEST(DaemonLifecycle, FailedJobQuotingANonUtf8FileNameStaysReadableEverywhere) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start());
  const std::string folder = daemon.dir() + "/latin1";
  fs::create_directories(folder);
  std::ofstream(folder + "/caf\xE9.txt") << std::string(4096, 'x');  // not an llm.c shard
  std::string spec = daemon.spec_json("latin1", 5, 1, 0);
  const size_t train = spec.find(R"("train": ")") + 10;
  spec.replace(train, spec.find('"', train) - train, folder + "/*.txt");
  spec.replace(spec.find("TEXT_BYTES"), 10, "LLMC");
  JobStatus job;
  ASSERT_TRUE(daemon.submit(spec, &job).ok());
  const JobStatus failed =
      daemon.wait_for(job.id(), [](const JobStatus& j) { return in_state(j, accum::v1::FAILED); });
  ASSERT_EQ(failed.state(), accum::v1::FAILED) << failed.message();
  EXPECT_NE(failed.message().find("caf\xEF\xBF\xBD.txt"), std::string::npos) << failed.message();
  ASSERT_FALSE(failed.transitions().empty());
  EXPECT_NE(failed.transitions().rbegin()->message().find("caf\xEF\xBF\xBD"), std::string::npos);

  std::string output;
  EXPECT_EQ(run_accumctl(daemon, {"list"}, &output), 0) << output;
  EXPECT_NE(output.find(job.id() + "   latin1"), std::string::npos) << output;
  EXPECT_EQ(run_accumctl(daemon, {"status", job.id()}, &output), 0) << output;
  EXPECT_NE(output.find("caf\xEF\xBF\xBD.txt"), std::string::npos) << output;
  EXPECT_EQ(run_accumctl(daemon, {"logs", job.id()}, &output), 0) << output;
  EXPECT_NE(output.find("[rank 0] accum-worker: error: data.train: data file " + folder +
                        "/caf\xEF\xBF\xBD.txt"),
            std::string::npos)
      << output;
  EXPECT_EQ(run_accumctl(daemon, {"watch", job.id()}, &output), 1) << output;
  EXPECT_NE(output.find(job.id() + " FAILED: "), std::string::npos) << output;
}

}  // namespace
}  // namespace accum::testing
