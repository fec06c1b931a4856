// Bad checkpoints reach the user as a clear error and a non-zero exit, and lose nothing:
// corrupt, damaged or mismatched checkpoints, a full disk while one is written, an unusable
// or busy checkpoint.dir, a max_steps below the checkpoint's step.
#include <gtest/gtest.h>
#include <signal.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "daemon/worker/io/checkpoint_dir.h"
#include "daemon/worker/io/json.h"
#include "tests/common/same_bytes.h"
#include "tests/common/scratch_tmpfs.h"
#include "tests/worker/worker_errors_fixture.h"
#include "tests/worker/worker_test_util.h"

namespace accum::testing {
namespace {

TEST_F(WorkerErrorsTest, CorruptCheckpointIsRefusedNamingTheFile) {
  ASSERT_EQ(run_with({{"max_steps", "2"}}).exit_code, 0);
  const std::string model = dir_ / "ckpt/step_00000002/model.safetensors";
  std::string bytes = read_file(model);
  bytes[bytes.size() - 5] ^= 0x5a;
  write_file(model, bytes);
  auto result = run_with({{"max_steps", "4"}, {"checkpoint.resume_from", "\"latest\""}});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("model.safetensors"), std::string::npos) << result.output;
}

// A damaged newest checkpoint with an older good one: training resumes from the older
// one (nothing else is lost) and says which checkpoint it passed over and why.
TEST_F(WorkerErrorsTest, DamagedLatestCheckpointIsPassedOverOutLoud) {
  ASSERT_EQ(run_with({{"max_steps", "2"}, {"checkpoint.every_steps", "1"}}).exit_code, 0);
  const std::string model = dir_ / "ckpt/step_00000002/model.safetensors";
  std::string bytes = read_file(model);
  bytes[bytes.size() - 5] ^= 0x5a;
  write_file(model, bytes);
  auto result = run_with({{"max_steps", "4"},
                          {"checkpoint.every_steps", "1"},
                          {"checkpoint.resume_from", "\"latest\""}});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  for (const char* word : {"not resuming from a newer checkpoint", "step_00000002",
                           "model.safetensors", "resumed from"}) {
    EXPECT_NE(result.output.find(word), std::string::npos) << word << ": " << result.output;
  }
  EXPECT_NE(result.output.find("step_00000001"), std::string::npos) << result.output;
}

TEST_F(WorkerErrorsTest, MismatchedResumeIsRefusedAndTheGoodCheckpointSurvives) {
  ASSERT_EQ(run_with({{"max_steps", "2"}}).exit_code, 0);
  const std::string model = dir_ / "ckpt/step_00000002/model.safetensors";
  const std::string before = read_existing_file(model);
  const std::string latest_before = read_existing_file(dir_ / "ckpt/latest");
  auto result = run_with(
      {{"max_steps", "4"}, {"model.n_layer", "3"}, {"checkpoint.resume_from", "\"latest\""}});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("n_layer"), std::string::npos) << result.output;
  EXPECT_TRUE(holds_bytes(model, before));
  EXPECT_TRUE(holds_bytes(dir_ / "ckpt/latest", latest_before));
  EXPECT_TRUE(io::verify_checkpoint(dir_ / "ckpt/step_00000002").ok());
}

// `latest` names a checkpoint whose manifest is broken and no other one verifies: the
// worker refuses (bad input, naming the file) instead of training again from step 1
// over the old metrics. A folder without any checkpoint still starts fresh.
TEST_F(WorkerErrorsTest, UnreadableLatestCheckpointIsRefusedNotRestartedFromScratch) {
  ASSERT_EQ(run_with({{"max_steps", "3"}}).exit_code, 0);
  const std::string metrics_before = read_existing_file(dir_ / "metrics.jsonl");
  const std::string manifest = dir_ / "ckpt/step_00000003/manifest.json";
  write_file(manifest, read_file(manifest).substr(0, 20));
  auto result = run_with({{"max_steps", "5"}, {"checkpoint.resume_from", "\"latest\""}});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  for (const char* words : {"holds checkpoints but none of them can be read",
                            "step_00000003: manifest.json is not valid JSON"}) {
    EXPECT_NE(result.output.find(words), std::string::npos) << words << ": " << result.output;
  }
  EXPECT_TRUE(holds_bytes(dir_ / "metrics.jsonl", metrics_before));

  // Nothing was ever saved under ckpt_new (only a crashed writer's temp folder): fresh start.
  std::filesystem::create_directories(dir_ / "ckpt_new/.tmp-step_00000001-999999");
  auto fresh = run_with({{"max_steps", "2"},
                         {"checkpoint.dir", "\"ckpt_new\""},
                         {"metrics_path", "\"fresh.jsonl\""},
                         {"checkpoint.resume_from", "\"latest\""}});
  EXPECT_EQ(fresh.exit_code, 0) << fresh.output;
  EXPECT_EQ(read_metrics(dir_ / "fresh.jsonl").size(), 2u);
}

// The saved data position means the same batches only on the same data: a resume after
// data.train changed size (a shard added to a glob, a file rewritten) is refused, naming
// both sizes, instead of continuing on other batches; on the same data it resumes.
TEST_F(WorkerErrorsTest, ResumeOnDataOfAnotherSizeIsRefused) {
  ASSERT_EQ(run_with({{"max_steps", "2"}}).exit_code, 0);
  const std::string corpus = read_file(dir_ / "corpus.txt");
  write_file(dir_ / "corpus.txt", corpus + make_corpus(3000));
  auto result = run_with({{"max_steps", "4"}, {"checkpoint.resume_from", "\"latest\""}});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  const std::string sizes = "data.train held " + std::to_string(corpus.size()) +
                            " tokens when it was written and holds " +
                            std::to_string(corpus.size() + 3000) + " now";
  EXPECT_NE(result.output.find(sizes), std::string::npos) << result.output;
  write_file(dir_ / "corpus.txt", corpus);
  auto resumed = run_with({{"max_steps", "4"}, {"checkpoint.resume_from", "\"latest\""}});
  EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_EQ(read_metrics(dir_ / "metrics.jsonl").size(), 4u);
}

// A state.json the manifest vouches for but whose contents cannot be right: refused as
// bad input naming the field and what was expected, not resumed from the wrong place.
struct StateCase {
  std::string name, from, to;
  std::vector<std::string> expected;
};

TEST_F(WorkerErrorsTest, DamagedCheckpointStateIsRefusedNamingTheField) {
  ASSERT_EQ(run_with({{"max_steps", "2"}}).exit_code, 0);
  const std::string state = read_file(dir_ / "ckpt/step_00000002/state.json");
  ASSERT_NE(state.find("\"format_version\": 1,"), std::string::npos) << state;
  ASSERT_NE(state.find("\"step\": \"2\","), std::string::npos) << state;
  ASSERT_NE(state.find("\"tokens_per_update\": \"128\","), std::string::npos) << state;
  ASSERT_NE(state.find("\"optimizer.safetensors\""), std::string::npos) << state;
  ASSERT_NE(state.find("\"updates_applied\": \"2\""), std::string::npos) << state;
  const std::vector<StateCase> cases = {
      {"more_updates_than_steps",
       "\"updates_applied\": \"2\"",
       "\"updates_applied\": \"3\"",
       {"updates_applied is 3", "expected 0 to step (2)"}},
      {"newer_format",
       "\"format_version\": 1,",
       "\"format_version\": 2,",
       {"format_version is 2", "reads format_version 1"}},
      {"no_format",
       "\"format_version\": 1,",
       "",
       {"format_version is 0", "reads format_version 1"}},
      {"zero_batch",
       "\"tokens_per_update\": \"128\",",
       "",
       {"tokens_per_update is 0", "expected > 0"}},
      {"negative_batch",
       "\"tokens_per_update\": \"128\",",
       "\"tokens_per_update\": \"-128\",",
       {"tokens_per_update is -128", "expected > 0"}},
      {"other_step",
       "\"step\": \"2\",",
       "\"step\": \"1\",",
       {"step is 1", "expected 2, the step of manifest.json"}},
      {"escaping_file",
       "\"optimizer.safetensors\"",
       "\"../moments.safetensors\"",
       {"optimizer_files names \"../moments.safetensors\"", "listed in manifest.json"}},
      {"unlisted_file",
       "\"optimizer.safetensors\"",
       "\"moments.safetensors\"",
       {"optimizer_files names \"moments.safetensors\"", "listed in manifest.json"}},
  };
  for (const StateCase& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string root = dir_ / ("ckpt_" + c.name);
    std::filesystem::copy(dir_ / "ckpt", root, std::filesystem::copy_options::recursive);
    const std::string step_dir = root + "/step_00000002";
    // The files the damaged names point at exist and hold the real moments, so only the
    // check of the name can refuse them.
    std::filesystem::copy_file(step_dir + "/optimizer.safetensors", root + "/moments.safetensors");
    std::filesystem::copy_file(step_dir + "/optimizer.safetensors",
                               step_dir + "/moments.safetensors");
    std::string damaged = state;
    damaged.replace(damaged.find(c.from), c.from.size(), c.to);  // the first: not the spec's
    write_file(step_dir + "/state.json", damaged);
    ASSERT_NO_THROW(reseal_manifest(step_dir, "state.json"));
    auto result = run_with({{"max_steps", "4"},
                            {"checkpoint.dir", "\"ckpt_" + c.name + "\""},
                            {"metrics_path", "\"" + c.name + ".jsonl\""},
                            {"checkpoint.resume_from", "\"latest\""}});
    EXPECT_EQ(result.exit_code, 2) << result.output;
    EXPECT_NE(result.output.find("step_00000002/state.json"), std::string::npos) << result.output;
    for (const std::string& words : c.expected) {
      EXPECT_NE(result.output.find(words), std::string::npos) << words << ": " << result.output;
    }
  }
}

// A checkpoint in a folder of any name, its state.json and manifest.json agreeing on a
// negative step: it was resumed, training "steps" -2, -1 and 0 at negative learning rates
// until Adam's bias correction gave NaN. It is refused, naming the step.
TEST_F(WorkerErrorsTest, CheckpointOfNegativeStepIsRefused) {
  ASSERT_EQ(run_with({{"max_steps", "2"}}).exit_code, 0);
  const std::string step_dir = dir_ / "ckpt/mine";
  std::filesystem::copy(dir_ / "ckpt/step_00000002", step_dir);
  std::string state = read_file(step_dir + "/state.json");
  for (const auto& [from, to] :
       {std::pair<std::string, std::string>{"\"step\": \"2\",", "\"step\": \"-3\","},
        {",\n \"updates_applied\": \"2\"", ""}}) {
    ASSERT_NE(state.find(from), std::string::npos) << state;
    state.replace(state.find(from), from.size(), to);
  }
  std::string manifest = read_file(step_dir + "/manifest.json");
  ASSERT_NE(manifest.find("\"step\": 2,"), std::string::npos) << manifest;
  manifest.replace(manifest.find("\"step\": 2,"), 10, "\"step\": -3,");
  write_file(step_dir + "/manifest.json", manifest);
  write_file(step_dir + "/state.json", state);
  ASSERT_NO_THROW(reseal_manifest(step_dir, "state.json"));
  auto result = run_with({{"max_steps", "4"}, {"checkpoint.resume_from", "\"ckpt/mine\""}});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("mine/state.json: step is -3; expected >= 0"), std::string::npos)
      << result.output;
}

// A resumed run keeps the checkpoint's effective batch; a spec asking for another one
// (directly, or through grad_accum_steps) is refused naming both, not ignored.
TEST_F(WorkerErrorsTest, ResumeWithAnotherTokensPerUpdateIsRefusedNamingBoth) {
  ASSERT_EQ(run_with({{"max_steps", "2"}}).exit_code, 0);  // 128 tokens per update, K=4
  auto resume_with = [&](const std::string& field, const std::string& value) {
    std::map<std::string, std::string> overrides = {{"max_steps", "4"},
                                                    {"batch.tokens_per_update", ""},
                                                    {"checkpoint.resume_from", "\"latest\""}};
    overrides[field] = value;
    return run_with(overrides);
  };
  auto larger = resume_with("batch.tokens_per_update", "256");
  EXPECT_EQ(larger.exit_code, 2) << larger.output;
  for (const char* words :
       {"trained with tokens_per_update 128", "the spec asks for batch.tokens_per_update 256",
        "set batch.tokens_per_update to 128"}) {
    EXPECT_NE(larger.output.find(words), std::string::npos) << words << ": " << larger.output;
  }
  auto fewer_steps = resume_with("batch.grad_accum_steps", "2");
  EXPECT_EQ(fewer_steps.exit_code, 2) << fewer_steps.output;
  for (const char* words : {"trained with tokens_per_update 128",
                            "batch.grad_accum_steps 2 on 1 ranks, i.e. tokens_per_update 64"}) {
    EXPECT_NE(fewer_steps.output.find(words), std::string::npos)
        << words << ": " << fewer_steps.output;
  }
  // The same effective batch, said with grad_accum_steps, resumes.
  auto same = resume_with("batch.grad_accum_steps", "4");
  EXPECT_EQ(same.exit_code, 0) << same.output;
  EXPECT_NE(same.output.find("resumed from"), std::string::npos) << same.output;
}

// Bytes a directory's files take on a tmpfs (whole 4 KiB pages).
size_t pages_bytes(const std::filesystem::path& dir) {
  size_t total = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) total += (entry.file_size() + 4095) / 4096 * 4096;
  }
  return total;
}

// The disk fills up while a checkpoint is written: the worker stops with a runtime failure
// (exit 1, which accumd retries; not 2, bad input) naming the error and the file, leaves no
// directory that looks like a checkpoint and no temp files, and `latest` still names the
// previous complete one. Once there is space again, resuming from it finishes the job with
// the same bits as a run the disk never interrupted.
TEST_F(WorkerErrorsTest, FullDiskDuringACheckpointLosesNothing) {
  const std::map<std::string, std::string> job = {
      {"max_steps", "6"}, {"checkpoint.every_steps", "2"}, {"checkpoint.keep_last", "5"}};
  auto with = [&](std::map<std::string, std::string> overrides) {
    overrides.insert(job.begin(), job.end());
    return overrides;
  };
  // The run the disk never interrupts, on the ordinary disk.
  ASSERT_EQ(run_with(with({{"checkpoint.dir", "\"ref_ckpt\""},
                           {"metrics_path", "\"ref_metrics.jsonl\""}}))
                .exit_code,
            0);
  const size_t checkpoint_bytes = pages_bytes(dir_ / "ref_ckpt/step_00000002");
  ASSERT_GT(checkpoint_bytes, 0u);

  // Room for one and a half checkpoints: step 2's fits, step 4's runs out of space.
  ScratchTmpfs disk(dir_ / "disk", checkpoint_bytes * 3 / 2);
  ACCUM_SKIP_UNLESS_MOUNTED(disk);
  const std::string root = dir_ / "disk/ckpt";
  auto full = run_with(with({{"checkpoint.dir", "\"disk/ckpt\""}}));
  EXPECT_EQ(full.exit_code, 1) << full.output;
  for (const char* word :
       {"checkpoint of step 4", "No space left on device", "nothing of it was kept",
        "the last complete one", "disk/ckpt/step_00000002, is untouched"}) {
    EXPECT_NE(full.output.find(word), std::string::npos) << word << ": " << full.output;
  }
  std::vector<int64_t> steps;
  for (const auto& [step, path] : io::list_checkpoints(root)) steps.push_back(step);
  EXPECT_EQ(steps, std::vector<int64_t>{2});
  EXPECT_EQ(read_file(root + "/latest"), "step_00000002\n");
  EXPECT_TRUE(io::verify_checkpoint(root + "/step_00000002").ok());
  for (const auto& entry : std::filesystem::directory_iterator(root)) {
    EXPECT_NE(entry.path().filename().string().rfind(".tmp-", 0), 0u)
        << "left behind: " << entry.path();
  }

  // Space again: the job resumes from step 2 and ends where the uninterrupted run did.
  ASSERT_TRUE(disk.resize(checkpoint_bytes * 8)) << std::strerror(errno);
  auto resumed = run_with(
      with({{"checkpoint.dir", "\"disk/ckpt\""}, {"checkpoint.resume_from", "\"latest\""}}));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
  EXPECT_TRUE(same_bytes(root + "/step_00000006/model.safetensors",
                         dir_ / "ref_ckpt/step_00000006/model.safetensors"));
  EXPECT_TRUE(same_bytes(root + "/step_00000006/optimizer.safetensors",
                         dir_ / "ref_ckpt/step_00000006/optimizer.safetensors"));
}

// Resuming with max_steps below the checkpoint's step would train nothing and say it
// succeeded: refused, naming both numbers, with the checkpoint and the metrics untouched.
TEST_F(WorkerErrorsTest, ResumeWithMaxStepsBelowTheCheckpointIsRefused) {
  ASSERT_EQ(run_with({{"max_steps", "5"}}).exit_code, 0);
  const std::string metrics_before = read_existing_file(dir_ / "metrics.jsonl");
  auto result = run_with({{"max_steps", "3"}, {"checkpoint.resume_from", "\"latest\""}});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  for (const char* words : {"max_steps 3 is below the checkpoint's step 5", "step_00000005",
                            "nothing to train; expected max_steps >= 5"}) {
    EXPECT_NE(result.output.find(words), std::string::npos) << words << ": " << result.output;
  }
  EXPECT_TRUE(holds_bytes(dir_ / "metrics.jsonl", metrics_before));
  EXPECT_EQ(read_file(dir_ / "ckpt/latest"), "step_00000005\n");
}

// A second run started on a checkpoint.dir that a run is still training into (a job launched
// twice, two specs sharing a folder) would resume from the first's checkpoints and the two
// would replace each other's step directories: it is refused, naming the folder and the
// holder, and the first run is not disturbed. Once the first has ended, the folder is free.
TEST_F(WorkerErrorsTest, SecondRunInACheckpointDirInUseIsRefused) {
  const std::map<std::string, std::string> first_run = {{"max_steps", "100000"},
                                                        {"checkpoint.every_steps", "1"},
                                                        {"optimizer.schedule", "\"constant\""},
                                                        {"optimizer.warmup_steps", "0"}};
  write_file(dir_ / "first.json", tiny_spec_json(first_run));
  const pid_t first = spawn({worker_binary(), "--spec", dir_ / "first.json"}, dir_ / "first.log");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (io::list_checkpoints(dir_ / "ckpt").empty() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_FALSE(io::list_checkpoints(dir_ / "ckpt").empty()) << read_file(dir_ / "first.log");

  write_file(dir_ / "second.json", tiny_spec_json({{"max_steps", "3"},
                                                   {"metrics_path", "\"second.jsonl\""},
                                                   {"checkpoint.resume_from", "\"latest\""}}));
  const RunResult second = run({worker_binary(), "--spec", dir_ / "second.json"});
  EXPECT_EQ(second.exit_code, 1) << second.output;  // transient: accumd retries it later
  for (const std::string& words :
       {std::string("checkpoint.dir ") + (dir_ / "ckpt") + " is in use by another training run",
        "pid " + std::to_string(first) + " on host",
        std::string("give this one another checkpoint.dir")}) {
    EXPECT_NE(second.output.find(words), std::string::npos) << words << ": " << second.output;
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ / "second.jsonl"));

  ASSERT_EQ(kill(first, SIGTERM), 0);
  ASSERT_EQ(wait_exit(first, 120), 0) << read_file(dir_ / "first.log");
  const auto metrics = read_metrics(dir_ / "metrics.jsonl");
  ASSERT_FALSE(metrics.empty());
  EXPECT_EQ(io::list_checkpoints(dir_ / "ckpt").back().first, metrics.back().step);
  // The folder is free again: the second run resumes from the first's last checkpoint.
  write_file(dir_ / "second.json",
             tiny_spec_json({{"max_steps", std::to_string(metrics.back().step + 1)},
                             {"metrics_path", "\"second.jsonl\""},
                             {"checkpoint.resume_from", "\"latest\""}}));
  const RunResult after = run({worker_binary(), "--spec", dir_ / "second.json"});
  EXPECT_EQ(after.exit_code, 0) << after.output;
  EXPECT_EQ(read_metrics(dir_ / "second.jsonl").size(), 1u);
}

}  // namespace
}  // namespace accum::testing
