// The checkpoint's durability protocol as the real accum-worker carries it out, observed by an
// LD_PRELOAD library (fsync_log_shim.cpp) that logs every fsync and rename in call order:
// every file of a step directory and the directory itself reach the disk before the rename
// that publishes it, the checkpoint folder is fsynced after that rename and before `latest`
// names the step, and `latest` is published the same way (its temp file fsynced, renamed,
// the folder fsynced). A missing
// fsync would pass every other test and lose a checkpoint only on a power cut.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/worker/worker_test_util.h"

namespace accum::testing {
namespace {

namespace fs = std::filesystem;

// Index of the first line at or after `from` that equals `line`, or -1.
long find_line(const std::vector<std::string>& lines, const std::string& line, size_t from = 0) {
  for (size_t i = from; i < lines.size(); ++i) {
    if (lines[i] == line) return static_cast<long>(i);
  }
  return -1;
}

TEST(CheckpointDurabilityTest, FilesAndFoldersAreFsyncedBeforeACheckpointIsPublished) {
  TempDir dir;
  write_file(dir / "corpus.txt", make_corpus(20000));
  write_file(dir / "job.json", tiny_spec_json({{"max_steps", "2"}}));
  const std::string log = dir / "syscalls.log";
  setenv("LD_PRELOAD", ACCUM_FSYNC_LOG_SHIM, 1);
  setenv("ACCUM_TEST_SYSCALL_LOG", log.c_str(), 1);
  const RunResult result = run({worker_binary(), "--spec", dir / "job.json"});
  unsetenv("LD_PRELOAD");
  unsetenv("ACCUM_TEST_SYSCALL_LOG");
  ASSERT_EQ(result.exit_code, 0) << result.output;

  std::vector<std::string> lines;
  std::ifstream in(log);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_FALSE(lines.empty()) << "the shim logged nothing: was it preloaded?";

  const std::string root = fs::canonical(dir / "ckpt").string();
  const std::string step = root + "/step_00000002";
  // The rename that publishes the step directory, and the temporary directory it came from.
  long published = -1;
  std::string tmp;
  for (size_t i = 0; i < lines.size() && published < 0; ++i) {
    const std::string suffix = " " + step;
    if (lines[i].rfind("rename " + root + "/.tmp-", 0) == 0 && lines[i].size() > suffix.size() &&
        lines[i].compare(lines[i].size() - suffix.size(), suffix.size(), suffix) == 0) {
      published = static_cast<long>(i);
      tmp = lines[i].substr(7, lines[i].size() - 7 - suffix.size());
    }
  }
  ASSERT_GE(published, 0) << "no rename published " << step;
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(step)) names.push_back(entry.path().filename());
  ASSERT_GE(names.size(), 3u);  // model, optimizer state, state.json, manifest.json
  for (const std::string& name : names) {
    const long synced = find_line(lines, "fsync " + tmp + "/" + name);
    EXPECT_GE(synced, 0) << name << " was never fsynced";
    EXPECT_LT(synced, published) << name << " was fsynced after the directory was published";
  }
  const long tmp_synced = find_line(lines, "fsync " + tmp);
  EXPECT_GE(tmp_synced, 0) << "the step directory was never fsynced";
  EXPECT_LT(tmp_synced, published) << "the step directory was fsynced after its rename";
  const long root_synced = find_line(lines, "fsync " + root, published);
  EXPECT_GT(root_synced, published) << "the checkpoint folder was not fsynced after the rename";

  // `latest`: a temp file, fsynced, renamed over it, then the folder fsynced.
  long latest = -1;
  std::string latest_tmp;
  for (size_t i = published; i < lines.size() && latest < 0; ++i) {
    const std::string suffix = " " + root + "/latest";
    if (lines[i].rfind("rename ", 0) == 0 && lines[i].size() > suffix.size() &&
        lines[i].compare(lines[i].size() - suffix.size(), suffix.size(), suffix) == 0) {
      latest = static_cast<long>(i);
      latest_tmp = lines[i].substr(7, lines[i].size() - 7 - suffix.size());
    }
  }
  ASSERT_GE(latest, 0) << "latest was not replaced by a rename after the step was published";
  const long latest_synced = find_line(lines, "fsync " + latest_tmp, published);
  EXPECT_GE(latest_synced, 0) << "latest's temp file was never fsynced";
  EXPECT_LT(latest_synced, latest);
  // The step's rename is durable before `latest` can name it.
  EXPECT_LT(root_synced, latest)
      << "the checkpoint folder was not fsynced between the step's rename and latest's";
  EXPECT_GT(find_line(lines, "fsync " + root, latest), latest)
      << "the checkpoint folder was not fsynced after latest was replaced";
}

// A checkpoint folder on a file system that takes no locks (flock fails with ENOLCK) cannot
// keep a second run out; the run says so and trains, rather than refusing to start.
TEST(CheckpointDurabilityTest, AFolderWithoutLocksTrainsWithAWarning) {
  TempDir dir;
  write_file(dir / "corpus.txt", make_corpus(20000));
  write_file(dir / "job.json", tiny_spec_json({{"max_steps", "2"}}));
  setenv("LD_PRELOAD", ACCUM_FSYNC_LOG_SHIM, 1);
  setenv("ACCUM_TEST_FLOCK_ERRNO", std::to_string(ENOLCK).c_str(), 1);
  const RunResult result = run({worker_binary(), "--spec", dir / "job.json"});
  unsetenv("LD_PRELOAD");
  unsetenv("ACCUM_TEST_FLOCK_ERRNO");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("does not take locks"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("nothing keeps a second run out of"), std::string::npos)
      << result.output;
  EXPECT_TRUE(fs::exists(dir / "ckpt/step_00000002/manifest.json"));
}

}  // namespace
}  // namespace accum::testing
