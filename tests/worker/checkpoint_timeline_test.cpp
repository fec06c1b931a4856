// tests/worker/checkpoint_timeline_test.cpp — the real accum-worker around checkpoints
// that are complete but not where `latest` points, of a timeline a resume went back
// from, or that the manifest does not vouch for; and a resume_from that is no folder.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "daemon/worker/io/checkpoint_dir.h"
#include "daemon/worker/io/json.h"
#include "tests/common/same_bytes.h"
#include "tests/common/scratch_tmpfs.h"
#include "tests/worker/worker_test_util.h"

namespace accum::testing {
namespace {

namespace fs = std::filesystem;

class CheckpointTimelineTest : public ::testing::Test {
 protected:
  void SetUp() override { write_file(dir_ / "corpus.txt", make_corpus(20000)); }

  RunResult run_with(const std::map<std::string, std::string>& overrides) {
    write_file(dir_ / "job.json", tiny_spec_json(overrides));
    return run({worker_binary(), "--spec", dir_ / "job.json"});
  }
  std::vector<int64_t> steps_in(const std::string& root) {
    std::vector<int64_t> steps;
    for (const auto& [step, path] : io::list_checkpoints(root)) steps.push_back(step);
    return steps;
  }

  TempDir dir_;
};

#define EXPECT_OUTPUT_HAS(result, text) \
  EXPECT_NE((result).output.find(text), std::string::npos) << (text) << ": " << (result).output

// Bytes a directory's files take on a tmpfs (whole 4 KiB pages).
size_t pages_bytes(const fs::path& dir) {
  size_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) total += (entry.file_size() + 4095) / 4096 * 4096;
  }
  return total;
}

// The disk has room for step 5's files and manifest but not for the new `latest`: the
// worker fails (exit 1) saying step 5 is complete and `latest` was not updated (not that
// the checkpoint was lost), leaves no temp file, and the next resume from "latest"
// continues from step 5, saying that `latest` named step 4.
TEST_F(CheckpointTimelineTest, FullDiskWhileLatestIsWrittenKeepsTheCompleteCheckpoint) {
  const std::map<std::string, std::string> job = {{"max_steps", "5"},
                                                  {"checkpoint.every_steps", "4"}};
  auto with = [&](std::map<std::string, std::string> overrides) {
    overrides.insert(job.begin(), job.end());
    return overrides;
  };
  ASSERT_EQ(run_with(with({{"checkpoint.dir", "\"ref_ckpt\""}})).exit_code, 0);
  const size_t checkpoint_bytes = pages_bytes(dir_ / "ref_ckpt/step_00000004");
  ASSERT_GT(checkpoint_bytes, 0u);
  // Step 4 with its `latest` (a page) and the run's checkpoint.dir/.lock naming its holder (a
  // page), then step 5: nothing left for the next `latest`.
  ScratchTmpfs disk(dir_ / "disk", 2 * checkpoint_bytes + 2 * 4096);
  ACCUM_SKIP_UNLESS_MOUNTED(disk);
  const std::string root = dir_ / "disk/ckpt";
  auto full = run_with(with({{"checkpoint.dir", "\"disk/ckpt\""}}));
  EXPECT_EQ(full.exit_code, 1) << full.output;
  EXPECT_OUTPUT_HAS(full, "checkpoint step 5 is complete in " + root + "/step_00000005");
  EXPECT_OUTPUT_HAS(full, "`latest` could not be updated (disk full)");
  EXPECT_OUTPUT_HAS(full, "still names step_00000004");
  EXPECT_EQ(full.output.find("nothing of it was kept"), std::string::npos) << full.output;
  for (const auto& entry : fs::directory_iterator(root)) {
    EXPECT_NE(entry.path().filename().string().rfind(".tmp-", 0), 0u)
        << "left behind: " << entry.path();
  }
  EXPECT_EQ(read_file(root + "/latest"), "step_00000004\n");
  EXPECT_TRUE(io::verify_checkpoint(root + "/step_00000005").ok());

  ASSERT_TRUE(disk.resize(checkpoint_bytes * 8)) << std::strerror(errno);
  auto resumed = run_with(with({{"checkpoint.dir", "\"disk/ckpt\""},
                                {"max_steps", "6"},
                                {"checkpoint.resume_from", "\"latest\""}}));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_OUTPUT_HAS(resumed, "resumed from " + root + "/step_00000005 at step 5");
  EXPECT_OUTPUT_HAS(resumed, "latest names " + root + "/step_00000004");
  EXPECT_EQ(read_file(root + "/latest"), "step_00000006\n");
}

// Checkpoints at 10 and 20 (keep_last 2), then a run resumed from step 10 of the same
// folder, every 5 steps to 15: it keeps step 10 (its source; step 15 is its only newer
// checkpoint) and moves the abandoned step 20 aside, so a later resume from "latest"
// continues this run's timeline at 15, not the old one at 20.
TEST_F(CheckpointTimelineTest, ResumeFromAnOlderCheckpointKeepsItAndSetsTheOldTimelineAside) {
  const std::string root = dir_ / "ckpt";
  ASSERT_EQ(
      run_with(
          {{"max_steps", "20"}, {"checkpoint.every_steps", "10"}, {"checkpoint.keep_last", "2"}})
          .exit_code,
      0);
  ASSERT_EQ(steps_in(root), (std::vector<int64_t>{10, 20}));
  const std::string old_twenty = read_existing_file(root + "/step_00000020/model.safetensors");

  auto branched = run_with({{"max_steps", "15"},
                            {"checkpoint.every_steps", "5"},
                            {"checkpoint.keep_last", "2"},
                            {"checkpoint.resume_from", "\"" + root + "/step_00000010\""}});
  ASSERT_EQ(branched.exit_code, 0) << branched.output;
  EXPECT_OUTPUT_HAS(branched, "resumed from " + root + "/step_00000010");
  EXPECT_OUTPUT_HAS(branched, "moved them into " + root + "/abandoned-by-step_00000015");
  EXPECT_EQ(steps_in(root), (std::vector<int64_t>{10, 15}));
  EXPECT_EQ(read_file(root + "/latest"), "step_00000015\n");
  const std::string aside = root + "/abandoned-by-step_00000015/step_00000020";
  EXPECT_TRUE(io::verify_checkpoint(aside).ok());
  EXPECT_TRUE(holds_bytes(aside + "/model.safetensors", old_twenty));

  auto resumed = run_with({{"max_steps", "17"},
                           {"checkpoint.every_steps", "5"},
                           {"checkpoint.keep_last", "2"},
                           {"checkpoint.resume_from", "\"latest\""}});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_OUTPUT_HAS(resumed, "resumed from " + root + "/step_00000015 at step 15");
  EXPECT_EQ(steps_in(root), (std::vector<int64_t>{15, 17}));
  EXPECT_EQ(read_file(root + "/latest"), "step_00000017\n");
}

// Rewrites a step directory's manifest without the entry for `file`.
void drop_from_manifest(const std::string& step_dir, const std::string& file) {
  rewrite_manifest(step_dir, [&](const io::ManifestEntry& entry) { return entry.name != file; });
}

// A manifest that leaves out a file the checkpoint needs cannot vouch for it: the resume
// is refused as bad input (exit 2) naming the file, even where (model.safetensors) a
// byte of it was flipped that nothing else would notice.
TEST_F(CheckpointTimelineTest, ManifestThatOmitsARequiredFileIsRefusedNamingIt) {
  ASSERT_EQ(run_with({{"max_steps", "2"}}).exit_code, 0);
  for (const std::string file : {"model.safetensors", "state.json", "optimizer.safetensors"}) {
    SCOPED_TRACE(file);
    const std::string name = "ckpt_" + file.substr(0, file.find('.'));
    const std::string step_dir = dir_ / (name + "/step_00000002");
    fs::copy(dir_ / "ckpt", dir_ / name, fs::copy_options::recursive);
    drop_from_manifest(step_dir, file);
    if (file == "model.safetensors") {
      std::string bytes = read_file(step_dir + "/" + file);
      bytes[bytes.size() - 5] ^= 0x5a;
      write_file(step_dir + "/" + file, bytes);
    }
    auto result = run_with({{"max_steps", "4"},
                            {"checkpoint.dir", "\"" + name + "\""},
                            {"checkpoint.resume_from", "\"latest\""}});
    EXPECT_EQ(result.exit_code, 2) << result.output;
    EXPECT_OUTPUT_HAS(result, file);
    EXPECT_OUTPUT_HAS(result, "manifest.json");
  }
}

TEST_F(CheckpointTimelineTest, ResumeFromARegularFileSaysItIsNotADirectory) {
  write_file(dir_ / "passwd", "root:x:0:0:root:/root:/bin/bash\n");
  auto result = run_with({{"checkpoint.resume_from", "\"" + std::string(dir_ / "passwd") + "\""}});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_OUTPUT_HAS(result, std::string(dir_ / "passwd") + " is not a directory");
  EXPECT_EQ(result.output.find("does not exist"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace accum::testing
