// tests/daemon/e2e_resume_test.cpp — checkpoint.resume_from through accumd: a job
// seeded from another job's checkpoint starts at that step (and repeats the source
// job's next steps bit for bit), a restart after a failure resumes from the job's
// own newer checkpoint, and a resume_from that is missing, incomplete or written
// for another model is refused at submit, naming the field.
// And `accumctl continue` (ContinueJob): a new job that goes on from an ended job's latest
// checkpoint repeats an uninterrupted run's later steps bit for bit; an active job, one
// without a checkpoint and a max_steps that leaves nothing to train are refused by name.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/daemon/daemon_harness.h"

namespace accum::testing {
namespace {

namespace fs = std::filesystem;
using accum::v1::JobState;
using accum::v1::JobStatus;

// A harness spec with checkpoint.resume_from set (and `from`..`to` replaced, if given).
std::string with_resume_from(std::string json, const std::string& resume_from,
                             const std::string& from = "", const std::string& to = "") {
  const std::string keep = "\"keep_last\": 0}";
  json.replace(json.find(keep), keep.size(),
               absl::StrCat("\"keep_last\": 0, \"resume_from\": \"", resume_from, "\"}"));
  if (!from.empty()) json.replace(json.find(from), from.size(), to);
  return json;
}

// Messages of the job's transitions into `state`, in order.
std::vector<std::string> messages_into(const JobStatus& job, JobState state) {
  std::vector<std::string> messages;
  for (const auto& transition : job.transitions()) {
    if (transition.state() == state) messages.push_back(transition.message());
  }
  return messages;
}

TEST(DaemonResumeFrom, UserCheckpointSeedsTheJobAndRestartsUseTheJobsOwn) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(2)));
  // Source job A: 8 steps on 2 ranks, checkpoints at steps 4 and 8.
  JobStatus source;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("source", 8, 2, 4), &source).ok());
  source = daemon.wait_for(source.id(), ended);
  ASSERT_EQ(source.state(), accum::v1::SUCCEEDED) << source.message();
  const std::string seed = source.job_dir() + "/checkpoints/step_00000004";
  ASSERT_TRUE(fs::exists(seed + "/manifest.json")) << seed;
  std::map<int64_t, double> source_loss;
  for (const auto& [step, loss] : read_metrics(source.job_dir() + "/metrics.jsonl")) {
    source_loss[step] = loss;
  }
  ASSERT_EQ(source_loss.size(), 8u);

  // A checkpoint of another model shape is refused before anything runs.
  JobStatus refused;
  auto status = daemon.submit(with_resume_from(daemon.spec_json("wrong-shape", 60, 2, 10), seed,
                                               "\"n_layer\": 2", "\"n_layer\": 3"),
                              &refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("checkpoint.resume_from"), std::string::npos)
      << status.error_message();
  EXPECT_NE(status.error_message().find("model.n_layer"), std::string::npos)
      << status.error_message();

  // Job B: the same model and data, seeded from A's step 4; its own checkpoints every 10.
  JobStatus job;
  status = daemon.submit(with_resume_from(daemon.spec_json("seeded", 60, 2, 10), seed), &job);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(job.spec().checkpoint().resume_from(), seed) << "the stored spec keeps the user's";
  const auto running = daemon.wait_running(job.id(), 14);
  ASSERT_EQ(running.state(), accum::v1::RUNNING) << running.message();
  const auto pids = daemon.worker_pids(running.job_dir());
  ASSERT_EQ(pids.size(), 2u);
  ASSERT_EQ(kill(pids[1], SIGKILL), 0);  // rank 1: the job restarts

  const auto done = daemon.wait_for(job.id(), ended, std::chrono::seconds(180));
  ASSERT_EQ(done.state(), accum::v1::SUCCEEDED) << done.message();
  EXPECT_EQ(done.restarts(), 1);
  const auto starting = messages_into(done, accum::v1::STARTING);
  const auto hellos = messages_into(done, accum::v1::RUNNING);
  ASSERT_EQ(starting.size(), 2u);
  ASSERT_EQ(hellos.size(), 2u);
  EXPECT_NE(starting[0].find("starting from checkpoint " + seed), std::string::npos) << starting[0];
  EXPECT_NE(hellos[0].find("from step 4"), std::string::npos) << hellos[0];
  // The restart resumes from B's own checkpoint (a multiple of 10), not A's step 4.
  const auto at = hellos[1].find("from step ");
  ASSERT_NE(at, std::string::npos) << hellos[1];
  const int64_t resumed_at = std::atoll(hellos[1].c_str() + at + 10);
  EXPECT_GE(resumed_at, 10) << hellos[1];
  EXPECT_EQ(resumed_at % 10, 0) << hellos[1];
  EXPECT_NE(starting[1].find(absl::StrCat("resuming from step ", resumed_at)), std::string::npos)
      << starting[1];
  std::ifstream spec_file(done.job_dir() + "/spec.json");
  const std::string spec_text((std::istreambuf_iterator<char>(spec_file)), {});
  EXPECT_NE(spec_text.find("\"resume_from\": \"latest\""), std::string::npos)
      << "the last attempt ran from the job's own checkpoints:\n"
      << spec_text;

  // B's metrics start at step 5, each step once, and steps 5..8 repeat A's bit for bit.
  const auto rows = read_metrics(done.job_dir() + "/metrics.jsonl");
  ASSERT_EQ(rows.size(), 56u);
  for (size_t k = 0; k < rows.size(); ++k) {
    EXPECT_EQ(rows[k].first, static_cast<int64_t>(k + 5));
    if (rows[k].first <= 8) {
      EXPECT_EQ(rows[k].second, source_loss[rows[k].first]) << "step " << rows[k].first;
    }
  }
}

TEST(DaemonResumeFrom, MissingOrIncompleteCheckpointIsInvalidArgument) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start());
  // An interrupted write: the model file is there, the manifest (written last) is not.
  const std::string partial = daemon.dir() + "/partial/step_00000003";
  fs::create_directories(partial);
  std::ofstream(partial + "/model.safetensors") << "half a model";
  // A manifest naming a file that is not there.
  const std::string missing_file = daemon.dir() + "/missing-file/step_00000003";
  fs::create_directories(missing_file);
  std::ofstream(missing_file + "/manifest.json")
      << R"({"step": 3, "files": [{"name": "model.safetensors", "size": 12, "sha256": "00"}]})";
  // A job's checkpoint folder instead of one of its checkpoints.
  const std::string folder = daemon.dir() + "/folder";
  fs::create_directories(folder + "/step_00000003");
  std::ofstream(folder + "/step_00000003/manifest.json") << R"({"step": 3, "files": []})";

  const std::vector<std::pair<std::string, std::string>> cases = {
      {"no-such-checkpoint", daemon.dir() + "/no-such-checkpoint' does not exist"},  // relative
      {partial, "manifest.json"},
      {missing_file, "model.safetensors"},
      {folder, folder + "/step_00000003"},
  };
  for (const auto& [resume_from, named] : cases) {
    JobStatus job;
    const auto status =
        daemon.submit(with_resume_from(daemon.spec_json("bad-resume", 5, 1, 0), resume_from), &job);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << resume_from;
    EXPECT_NE(status.error_message().find("checkpoint.resume_from"), std::string::npos)
        << status.error_message();
    EXPECT_NE(status.error_message().find(named), std::string::npos)
        << "error '" << status.error_message() << "' should name " << named;
  }
  accum::v1::ListJobsRequest request;
  accum::v1::ListJobsResponse response;
  auto context = daemon.context();
  ASSERT_TRUE(daemon.stub().ListJobs(context.get(), request, &response).ok());
  EXPECT_EQ(response.jobs_size(), 0) << "a refused spec creates no job";
}

TEST(DaemonContinue, AnEndedJobContinuesFromItsLatestCheckpointBitForBit) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(2)));
  // The reference: 12 steps straight. Job A: the same spec, stopped at 8 (checkpoints at 4, 8).
  JobStatus straight, first;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("straight", 12, 1, 4), &straight).ok());
  ASSERT_TRUE(daemon.submit(daemon.spec_json("first", 8, 1, 4), &first).ok());
  straight = daemon.wait_for(straight.id(), ended);
  first = daemon.wait_for(first.id(), ended);
  ASSERT_EQ(straight.state(), accum::v1::SUCCEEDED) << straight.message();
  ASSERT_EQ(first.state(), accum::v1::SUCCEEDED) << first.message();

  // At its own max_steps there is nothing left to train: refused, naming the field.
  std::string output;
  EXPECT_EQ(run_accumctl(daemon, {"continue", first.id()}, &output), 5) << output;
  EXPECT_NE(output.find("max_steps: 8 leaves nothing to train"), std::string::npos) << output;
  EXPECT_NE(output.find("latest checkpoint is at step 8"), std::string::npos) << output;
  EXPECT_EQ(run_accumctl(daemon, {"continue", first.id(), "--max-steps", "0"}, &output), 2)
      << output;

  ASSERT_EQ(run_accumctl(daemon, {"continue", first.id(), "--max-steps", "12"}, &output), 0)
      << output;
  const std::string id = output.substr(0, output.find('\n'));
  ASSERT_NE(id, first.id());
  const JobStatus next = daemon.wait_for(id, ended);
  ASSERT_EQ(next.state(), accum::v1::SUCCEEDED) << next.message();
  EXPECT_EQ(next.spec().max_steps(), 12);
  EXPECT_EQ(next.spec().checkpoint().resume_from(), first.job_dir() + "/checkpoints/step_00000008");
  ASSERT_FALSE(next.transitions().empty());
  EXPECT_NE(next.transitions(0).message().find(
                absl::StrCat("continues ", first.id(), " from its checkpoint at step 8")),
            std::string::npos)
      << next.transitions(0).message();
  // Steps 9..12, each once, with the straight run's losses bit for bit.
  std::map<int64_t, double> straight_loss;
  for (const auto& [step, loss] : read_metrics(straight.job_dir() + "/metrics.jsonl")) {
    straight_loss[step] = loss;
  }
  const auto rows = read_metrics(next.job_dir() + "/metrics.jsonl");
  ASSERT_EQ(rows.size(), 4u);
  for (size_t k = 0; k < rows.size(); ++k) {
    EXPECT_EQ(rows[k].first, static_cast<int64_t>(k + 9));
    EXPECT_EQ(rows[k].second, straight_loss[rows[k].first]) << "step " << rows[k].first;
  }
  // The source job is left as it was.
  EXPECT_EQ(daemon.get(first.id()).state(), accum::v1::SUCCEEDED);

  // A job that ended before a checkpoint of its own continues from the one it started from.
  const std::string step4 = first.job_dir() + "/checkpoints/step_00000004";
  JobStatus seeded;
  ASSERT_TRUE(
      daemon.submit(with_resume_from(daemon.spec_json("seeded", 100000, 1, 0), step4), &seeded)
          .ok());
  seeded = daemon.wait_for(seeded.id(),
                           [](const JobStatus& j) { return j.state() == accum::v1::RUNNING; });
  ASSERT_EQ(run_accumctl(daemon, {"cancel", seeded.id(), "--force"}, &output), 0) << output;
  seeded = daemon.wait_for(seeded.id(), ended);
  ASSERT_EQ(seeded.state(), accum::v1::CANCELLED) << seeded.message();
  ASSERT_EQ(seeded.latest_checkpoint_step(), 0);
  ASSERT_EQ(run_accumctl(daemon, {"continue", seeded.id(), "--max-steps", "6"}, &output), 0)
      << output;
  const JobStatus again = daemon.wait_for(output.substr(0, output.find('\n')), ended);
  ASSERT_EQ(again.state(), accum::v1::SUCCEEDED) << again.message();
  EXPECT_EQ(again.spec().checkpoint().resume_from(), step4);
  const auto again_rows = read_metrics(again.job_dir() + "/metrics.jsonl");
  ASSERT_EQ(again_rows.size(), 2u);
  EXPECT_EQ(again_rows[0].first, 5);
  EXPECT_EQ(again_rows[0].second, straight_loss[5]);
}

// A cosine schedule decays over max_steps: `continue --max-steps` with a larger one goes on
// at a higher rate on a new curve, and accumctl says so, naming the rates (the note's
// arithmetic: ScheduleChangeNote.*). A spec with optimizer.decay_steps keeps one curve, and
// the note is not given.
TEST(DaemonContinue, ANewMaxStepsSaysWhenTheCosineCurveChanges) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(2)));
  auto cosine = [&](const std::string& name, const std::string& decay) {
    std::string json = daemon.spec_json(name, 4, 1, 4);
    const std::string constant = R"("schedule": "constant")";
    return json.replace(json.find(constant), constant.size(),
                        R"("schedule": "cosine", "min_lr": 0.0003)" + decay);
  };
  JobStatus over_max_steps, planned;
  ASSERT_TRUE(daemon.submit(cosine("over-max-steps", ""), &over_max_steps).ok());
  ASSERT_TRUE(daemon.submit(cosine("planned", R"(, "decay_steps": 8)"), &planned).ok());
  for (JobStatus* job : {&over_max_steps, &planned}) {
    *job = daemon.wait_for(job->id(), ended);
    ASSERT_EQ(job->state(), accum::v1::SUCCEEDED) << job->message();
  }
  const std::string curve_note = "its cosine learning rate now decays to step 8 instead of 4";
  std::string output;
  ASSERT_EQ(run_accumctl(daemon, {"continue", over_max_steps.id(), "--max-steps", "8"}, &output), 0)
      << output;
  EXPECT_NE(output.find(curve_note), std::string::npos) << output;
  // Step 5 was on min_lr (the old curve had ended at step 4); on the new one it is higher.
  EXPECT_NE(output.find(": step 5 trains at "), std::string::npos) << output;
  EXPECT_NE(output.find(", higher than the old curve's 3.000e-04"), std::string::npos) << output;
  EXPECT_NE(output.find("optimizer.decay_steps"), std::string::npos) << output;
  // The old job's folder is accumd's own: no note that the spec's checkpoint.dir is not used.
  EXPECT_EQ(output.find("go to its folder"), std::string::npos) << output;
  const std::string id = output.substr(0, output.find('\n'));
  EXPECT_EQ(id.rfind("job-", 0), 0u) << output;  // stdout's id comes first, the note after
  EXPECT_NE(daemon.wait_for(id, ended).transitions(0).message().find(curve_note),
            std::string::npos);

  ASSERT_EQ(run_accumctl(daemon, {"continue", planned.id(), "--max-steps", "8"}, &output), 0)
      << output;
  EXPECT_NE(output.find(absl::StrCat("continues ", planned.id(), " from its checkpoint at step 4")),
            std::string::npos)
      << output;
  EXPECT_EQ(output.find("its cosine learning rate"), std::string::npos) << output;
  EXPECT_EQ(daemon.wait_for(output.substr(0, output.find('\n')), ended).state(),
            accum::v1::SUCCEEDED);
}

TEST(DaemonContinue, ActiveJobsAndJobsWithoutACheckpointAreRefused) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start());
  // No checkpoints on a schedule, and a force cancel writes none either.
  JobStatus job;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("long", 100000, 1, 0), &job).ok());
  job =
      daemon.wait_for(job.id(), [](const JobStatus& j) { return j.state() == accum::v1::RUNNING; });
  ASSERT_EQ(job.state(), accum::v1::RUNNING) << job.message();
  std::string output;
  EXPECT_EQ(run_accumctl(daemon, {"continue", job.id()}, &output), 7) << output;
  EXPECT_NE(output.find("is RUNNING: a job continues once it has ended"), std::string::npos)
      << output;
  ASSERT_EQ(run_accumctl(daemon, {"cancel", job.id(), "--force"}, &output), 0) << output;
  job = daemon.wait_for(job.id(), ended);
  ASSERT_EQ(job.state(), accum::v1::CANCELLED) << job.message();
  EXPECT_EQ(run_accumctl(daemon, {"continue", job.id(), "--max-steps", "5"}, &output), 7) << output;
  EXPECT_NE(output.find("has no complete checkpoint to continue from"), std::string::npos)
      << output;
  // A negative max_steps through the RPC itself (accumctl refuses it first).
  accum::v1::ContinueJobRequest request;
  request.set_id(job.id());
  request.set_max_steps(-3);
  accum::v1::SubmitJobResponse response;
  auto context = daemon.context();
  const auto status = daemon.stub().ContinueJob(context.get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_NE(status.error_message().find("max_steps: got -3"), std::string::npos)
      << status.error_message();
  EXPECT_EQ(run_accumctl(daemon, {"continue", "job-999999"}, &output), 6) << output;
}

// A damaged newest checkpoint (same size, one byte flipped: only its sha256 tells) would
// fail the continued job at its first load; continue passes over it to the newest one that
// verifies and says so, and refuses when none does. A max_steps beyond the spec's 32 bits is
// refused, not cut short.
TEST(DaemonContinue, DamagedCheckpointsArePassedOverAndHugeMaxStepsIsRefused) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start());
  JobStatus first;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("first", 8, 1, 4), &first).ok());
  first = daemon.wait_for(first.id(), ended);
  ASSERT_EQ(first.state(), accum::v1::SUCCEEDED) << first.message();
  auto flip_a_byte = [](const std::string& path) {
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(file) << path;
    file.seekg(0, std::ios::end);
    const std::streamoff middle = file.tellg() / 2;
    char byte = 0;
    file.seekg(middle);
    file.read(&byte, 1);
    byte = static_cast<char>(byte ^ 0x40);
    file.seekp(middle);
    file.write(&byte, 1);
  };
  const std::string checkpoints = first.job_dir() + "/checkpoints";
  flip_a_byte(checkpoints + "/step_00000008/model.safetensors");

  std::string output;
  // Through the RPC itself (accumctl refuses them first): not cut to 32 bits (450, -2^31).
  for (const int64_t huge : {int64_t{4294967746}, int64_t{2147483648}}) {
    accum::v1::ContinueJobRequest request;
    request.set_id(first.id());
    request.set_max_steps(huge);
    accum::v1::SubmitJobResponse response;
    auto context = daemon.context();
    const auto status = daemon.stub().ContinueJob(context.get(), request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_NE(status.error_message().find(absl::StrCat("max_steps: got ", huge,
                                                       "; expected 0 (the job's own) or a step "
                                                       "count of at most 2147483647")),
              std::string::npos)
        << status.error_message();
  }
  ASSERT_EQ(run_accumctl(daemon, {"continue", first.id(), "--max-steps", "10"}, &output), 0)
      << output;
  const JobStatus next = daemon.wait_for(output.substr(0, output.find('\n')), ended);
  ASSERT_EQ(next.state(), accum::v1::SUCCEEDED) << next.message();
  EXPECT_EQ(next.spec().checkpoint().resume_from(), checkpoints + "/step_00000004");
  ASSERT_FALSE(next.transitions().empty());
  const std::string& note = next.transitions(0).message();
  EXPECT_NE(note.find("from its checkpoint at step 4 (newer ones do not verify: step 8: "),
            std::string::npos)
      << note;
  EXPECT_NE(note.find("model.safetensors"), std::string::npos) << note;
  const auto rows = read_metrics(next.job_dir() + "/metrics.jsonl");
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_EQ(rows.front().first, 5);

  flip_a_byte(checkpoints + "/step_00000004/model.safetensors");
  EXPECT_EQ(run_accumctl(daemon, {"continue", first.id(), "--max-steps", "10"}, &output), 7)
      << output;
  EXPECT_NE(output.find(absl::StrCat("job ", first.id(), " has no checkpoint that verifies")),
            std::string::npos)
      << output;
}

}  // namespace
}  // namespace accum::testing
