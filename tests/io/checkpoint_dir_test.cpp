// tests/io/checkpoint_dir_test.cpp — the checkpoint directory contract: a
// committed checkpoint verifies, a damaged one is refused naming the file, a
// writer that dies (destroyed, or SIGKILLed in another process) never leaves a
// directory that looks complete and never moves `latest`, retention keeps N.
#include "daemon/worker/io/checkpoint_dir.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>

#include "daemon/worker/io/json.h"
#include "tests/common/scratch_tmpfs.h"
#include "tests/io/temp_dir.h"

namespace accum::io {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

#define EXPECT_MENTIONS(message, text) \
  EXPECT_NE((message).find(text), std::string::npos) << "message: " << (message)

// Commits a checkpoint at `step` holding two files whose contents depend on `tag`.
std::string commit_checkpoint(const std::string& root, int64_t step, const std::string& tag,
                              size_t model_bytes = 4096) {
  CheckpointWriter writer(root, step);
  EXPECT_TRUE(writer.begin().ok());
  std::string model(model_bytes, '\0');
  for (size_t i = 0; i < model.size(); ++i)
    model[i] = static_cast<char>((i * 31 + tag.size()) & 0xFF);
  EXPECT_TRUE(write_file_durable(writer.path() + "/model.safetensors", model + tag).ok());
  EXPECT_TRUE(
      write_file_durable(writer.path() + "/state.json",
                         "{\"step\": " + std::to_string(step) + ", \"tag\": \"" + tag + "\"}\n")
          .ok());
  auto final_dir = writer.commit();
  EXPECT_TRUE(final_dir.ok()) << final_dir.status();
  return final_dir.ok() ? *final_dir : std::string();
}

std::string latest_of(const std::string& root) {
  auto text = read_file(root + "/latest");
  return text.ok() ? *text : "<no latest: " + std::string(text.status().message()) + ">";
}

std::vector<int64_t> steps_of(const std::string& root) {
  std::vector<int64_t> steps;
  for (const auto& [step, path] : list_checkpoints(root)) steps.push_back(step);
  return steps;
}

std::vector<std::string> temp_entries(const std::string& root) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(root)) {
    std::string name = entry.path().filename().string();
    if (name.rfind(".tmp-", 0) == 0) names.push_back(name);
  }
  return names;
}

TEST(CheckpointDir, StepDirNameRoundTrips) {
  EXPECT_EQ(step_dir_name(100), "step_00000100");
  EXPECT_EQ(step_dir_name(123456789), "step_123456789");
  EXPECT_EQ(parse_step_dir_name("step_00000100"), 100);
  EXPECT_EQ(parse_step_dir_name("step_123456789"), 123456789);
  EXPECT_FALSE(parse_step_dir_name("step_100").has_value());
  EXPECT_FALSE(parse_step_dir_name(".tmp-step_00000100-12").has_value());
  EXPECT_FALSE(parse_step_dir_name("step_0000010x").has_value());
}

TEST(CheckpointDir, Sha256MatchesKnownVector) {
  TempDir dir;
  ASSERT_TRUE(write_file_durable(dir.file("abc"), "abc").ok());
  EXPECT_EQ(*sha256_file(dir.file("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(*read_file(dir.file("abc")), "abc");
}

TEST(CheckpointDir, CreateDirectoriesDurableMakesEveryLevelAndNamesWhatBlocksIt) {
  TempDir dir;
  ASSERT_TRUE(create_directories_durable(dir.file("a/b/c")).ok());
  EXPECT_TRUE(fs::is_directory(dir.file("a/b/c")));
  EXPECT_TRUE(create_directories_durable(dir.file("a/b/c/")).ok()) << "it exists: nothing to do";
  ASSERT_TRUE(write_file_durable(dir.file("plain"), "not a folder").ok());
  const absl::Status blocked = create_directories_durable(dir.file("plain/sub"));
  EXPECT_FALSE(blocked.ok());
  EXPECT_MENTIONS(std::string(blocked.message()), dir.file("plain/sub") + ": create directory");
}

TEST(CheckpointDir, CommittedCheckpointVerifiesAndIsLatest) {
  TempDir dir;
  const std::string root = dir.file("ckpt");
  const std::string final_dir = commit_checkpoint(root, 100, "a");
  EXPECT_EQ(final_dir, root + "/step_00000100");
  EXPECT_TRUE(verify_checkpoint(final_dir).ok()) << verify_checkpoint(final_dir);
  EXPECT_EQ(latest_of(root), "step_00000100\n");
  EXPECT_TRUE(temp_entries(root).empty());

  auto manifest = parse_json(*read_file(final_dir + "/manifest.json"));
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->find("step")->as_int(), 100);
  const Json::Array& files = manifest->find("files")->as_array();
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].find("name")->as_string(), "model.safetensors");
  EXPECT_EQ(files[0].find("size")->as_int(), 4097);
  EXPECT_EQ(files[0].find("sha256")->as_string(), *sha256_file(final_dir + "/model.safetensors"));
  EXPECT_EQ(files[1].find("name")->as_string(), "state.json");

  auto resolved = resolve_checkpoint(root, "latest");
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(*resolved, final_dir);
}

class DamagedCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override { step_dir_ = commit_checkpoint(root_, 7, "x"); }
  std::string error() {
    absl::Status s = verify_checkpoint(step_dir_);
    EXPECT_FALSE(s.ok()) << "a damaged checkpoint verified";
    return std::string(s.message());
  }
  TempDir dir_;
  std::string root_ = dir_.file("ckpt");
  std::string step_dir_;
};

TEST_F(DamagedCheckpoint, TruncatedFileIsNamed) {
  fs::resize_file(step_dir_ + "/model.safetensors", 100);
  std::string message = error();
  EXPECT_MENTIONS(message, step_dir_);
  EXPECT_MENTIONS(message, "model.safetensors has 100 bytes");
  EXPECT_MENTIONS(message, "says 4097");
  // Resuming from that path explicitly is refused with the same reason.
  auto resolved = resolve_checkpoint(root_, step_dir_);
  ASSERT_FALSE(resolved.ok());
  EXPECT_MENTIONS(std::string(resolved.status().message()), "model.safetensors");
}

TEST_F(DamagedCheckpoint, ModifiedFileOfSameSizeIsNamedBySha) {
  std::string state = *read_file(step_dir_ + "/state.json");
  state[2] = 'X';
  ASSERT_TRUE(write_file_durable(step_dir_ + "/state.json", state).ok());
  std::string message = error();
  EXPECT_MENTIONS(message, "state.json has sha256");
  EXPECT_MENTIONS(message, "manifest.json says");
}

TEST_F(DamagedCheckpoint, MissingFileIsNamed) {
  fs::remove(step_dir_ + "/state.json");
  std::string message = error();
  EXPECT_MENTIONS(message, "file state.json (listed in manifest.json) is missing");
  EXPECT_TRUE(list_checkpoints(root_).empty()) << "an incomplete checkpoint was listed";
}

TEST_F(DamagedCheckpoint, MissingManifestIsNamed) {
  fs::remove(step_dir_ + "/manifest.json");
  std::string message = error();
  EXPECT_MENTIONS(message, step_dir_);
  EXPECT_MENTIONS(message, "manifest.json is missing");
}

TEST_F(DamagedCheckpoint, CorruptManifestIsNamed) {
  ASSERT_TRUE(write_file_durable(step_dir_ + "/manifest.json", "{\"step\": 7, ").ok());
  EXPECT_MENTIONS(error(), "manifest.json is not valid JSON");
}

TEST_F(DamagedCheckpoint, ManifestOfAnotherStepIsRefused) {
  fs::rename(step_dir_, root_ + "/step_00000008");
  step_dir_ = root_ + "/step_00000008";
  EXPECT_MENTIONS(error(), "says step 7 but the directory is step 8");
}

TEST(CheckpointDir, LatestFallsBackToNewestVerifiedWhenItsTargetIsDamaged) {
  TempDir dir;
  const std::string root = dir.file("ckpt");
  const std::string first = commit_checkpoint(root, 1, "a");
  const std::string second = commit_checkpoint(root, 2, "b");
  std::string state = *read_file(second + "/state.json");
  state[0] = '[';
  ASSERT_TRUE(write_file_durable(second + "/state.json", state).ok());
  std::string passed_over = "not cleared";
  auto resolved = resolve_checkpoint(root, "latest", &passed_over);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(*resolved, first);
  // The caller learns which checkpoint was passed over and why (once, not twice).
  EXPECT_MENTIONS(passed_over, second);
  EXPECT_MENTIONS(passed_over, "state.json");
  EXPECT_EQ(passed_over.find(second), passed_over.rfind(second)) << passed_over;
  // Nothing passed over: nothing to say.
  ASSERT_TRUE(resolve_checkpoint(root, "step_00000001", &passed_over).ok());
  EXPECT_EQ(passed_over, "");
  // A relative directory name resolves under the root.
  auto by_name = resolve_checkpoint(root, "step_00000001");
  ASSERT_TRUE(by_name.ok()) << by_name.status();
  EXPECT_EQ(*by_name, first);
}

TEST(CheckpointDir, ResolveWithoutAnyCheckpointIsNotFound) {
  TempDir dir;
  auto resolved = resolve_checkpoint(dir.file("ckpt"), "latest");
  ASSERT_FALSE(resolved.ok());
  EXPECT_TRUE(absl::IsNotFound(resolved.status()));
  EXPECT_MENTIONS(std::string(resolved.status().message()), dir.file("ckpt"));
  auto missing = resolve_checkpoint(dir.file("ckpt"), dir.file("ckpt/step_00000005"));
  ASSERT_FALSE(missing.ok());
  EXPECT_MENTIONS(std::string(missing.status().message()), "step_00000005 does not exist");
}

TEST(CheckpointDir, UncommittedWriterLeavesNothingAndKeepsLatest) {
  TempDir dir;
  const std::string root = dir.file("ckpt");
  commit_checkpoint(root, 1, "a");
  {
    CheckpointWriter writer(root, 2);
    ASSERT_TRUE(writer.begin().ok());
    ASSERT_TRUE(write_file_durable(writer.path() + "/model.safetensors", "partial").ok());
    EXPECT_TRUE(fs::exists(writer.path()));
  }  // destroyed without commit (an error path in the trainer)
  EXPECT_FALSE(fs::exists(root + "/step_00000002"));
  EXPECT_TRUE(temp_entries(root).empty());
  EXPECT_EQ(latest_of(root), "step_00000001\n");
  EXPECT_EQ(steps_of(root), std::vector<int64_t>{1});
}

TEST(CheckpointDir, WriterKilledMidWriteLeavesPreviousCheckpointLatest) {
  TempDir dir;
  const std::string root = dir.file("ckpt");
  const std::string first = commit_checkpoint(root, 1, "a");
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // the "worker": starts step 2, writes part of a file, then hangs
    CheckpointWriter writer(root, 2);
    if (!writer.begin().ok()) ::_exit(2);
    FILE* f = std::fopen((writer.path() + "/model.safetensors").c_str(), "wb");
    std::string block(1 << 16, 'w');
    for (int i = 0; i < 8; ++i) std::fwrite(block.data(), 1, block.size(), f);
    std::fflush(f);
    char byte = 1;
    if (::write(ready[1], &byte, 1) != 1) ::_exit(3);
    while (true) ::pause();  // mid-write when SIGKILL arrives
  }
  ::close(ready[1]);
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1);
  ::close(ready[0]);
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status));

  // The half-written checkpoint is only a temp dir; nothing looks complete.
  const std::string leftover = root + "/.tmp-step_00000002-" + std::to_string(child);
  EXPECT_TRUE(fs::exists(leftover));
  EXPECT_FALSE(fs::exists(root + "/step_00000002"));
  EXPECT_EQ(steps_of(root), std::vector<int64_t>{1});
  EXPECT_EQ(latest_of(root), "step_00000001\n");
  EXPECT_EQ(*resolve_checkpoint(root, "latest"), first);
  // Retention recognizes the dead writer's leftover and removes it.
  ASSERT_TRUE(apply_retention(root, 3).ok());
  EXPECT_FALSE(fs::exists(leftover));
  EXPECT_TRUE(verify_checkpoint(first).ok());
}

TEST(CheckpointDir, KillAtAnyMomentOfRepeatedCommitsNeverLeavesABrokenCheckpoint) {
  TempDir dir;
  const std::string root = dir.file("ckpt");
  commit_checkpoint(root, 1, "a");
  size_t most_checkpoints = 0;
  for (int delay_ms : {3, 17, 60, 250}) {
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {  // commits steps 2, 3, ... (and re-commits) until killed
      for (int64_t step = 2;; step = 2 + (step - 1) % 6)
        commit_checkpoint(root, step, std::string(static_cast<size_t>(step), 't'), 1 << 17);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    ::kill(child, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    // Every directory that looks like a checkpoint verifies completely, and a resume
    // from "latest" takes the newest of them (the child re-commits older steps, which
    // moves the newer ones aside; `latest` may lag a kill between rename and update).
    std::string newest;
    for (const auto& entry : fs::directory_iterator(root)) {
      if (!parse_step_dir_name(entry.path().filename().string())) continue;
      EXPECT_TRUE(verify_checkpoint(entry.path().string()).ok())
          << verify_checkpoint(entry.path().string());
      newest = std::max(newest, entry.path().string());
    }
    auto latest = resolve_checkpoint(root, "latest");
    ASSERT_TRUE(latest.ok()) << latest.status();
    EXPECT_EQ(*latest, newest) << "latest names " << latest_of(root);
    ASSERT_TRUE(apply_retention(root, 0).ok());
    EXPECT_TRUE(temp_entries(root).empty());
    // Counting those moved aside too: the cycle back to step 2 empties the folder.
    size_t committed = 0;
    for (const auto& entry : fs::recursive_directory_iterator(root)) {
      committed += parse_step_dir_name(entry.path().filename().string()) ? 1 : 0;
    }
    most_checkpoints = std::max(most_checkpoints, committed);
  }
  // The writer really got through commits (so kills landed between and inside them).
  EXPECT_GT(most_checkpoints, 2u);
}

TEST(CheckpointDir, RecommittingAStepReplacesItAtomically) {
  TempDir dir;
  const std::string root = dir.file("ckpt");
  commit_checkpoint(root, 3, "old");
  const std::string again = commit_checkpoint(root, 3, "new-contents");
  EXPECT_TRUE(verify_checkpoint(again).ok());
  EXPECT_NE(read_file(again + "/state.json")->find("new-contents"), std::string::npos);
  EXPECT_TRUE(temp_entries(root).empty());
  EXPECT_EQ(steps_of(root), std::vector<int64_t>{3});
}

TEST(CheckpointDir, RetentionKeepsNewestNAndTheOneLatestNames) {
  TempDir dir;
  const std::string root = dir.file("ckpt");
  for (int64_t step = 1; step <= 5; ++step) commit_checkpoint(root, step, "s");
  ASSERT_TRUE(apply_retention(root, 0).ok());  // 0 keeps all
  EXPECT_EQ(steps_of(root), (std::vector<int64_t>{1, 2, 3, 4, 5}));
  ASSERT_TRUE(apply_retention(root, 3).ok());
  EXPECT_EQ(steps_of(root), (std::vector<int64_t>{3, 4, 5}));
  EXPECT_FALSE(fs::exists(root + "/step_00000001"));
  EXPECT_TRUE(temp_entries(root).empty());
  // The one `latest` names survives even when older than the newest N (a `latest` that
  // lagged behind, say on a full disk).
  ASSERT_TRUE(write_file_durable(root + "/latest", "step_00000003\n").ok());
  ASSERT_TRUE(apply_retention(root, 1).ok());
  EXPECT_EQ(steps_of(root), (std::vector<int64_t>{3, 5}));
  EXPECT_FALSE(apply_retention(root, -1).ok());
}

// A run that resumed from step 10 of a folder that went on to step 20 writes step 15:
// step 20 is of the timeline it left. It is moved aside whole (not deleted, not counted
// by retention, never resumed from), so the resume source survives retention until a
// newer checkpoint of this run exists, and "latest" is this run's newest.
TEST(CheckpointDir, CommittingAnOlderStepSetsTheAbandonedTimelineAside) {
  TempDir dir;
  const std::string root = dir.file("ckpt");
  const std::string source = commit_checkpoint(root, 10, "a");
  commit_checkpoint(root, 20, "a");
  {
    CheckpointWriter writer(root, 15);
    ASSERT_TRUE(writer.begin().ok());
    ASSERT_TRUE(write_file_durable(writer.path() + "/model.safetensors", "b15").ok());
    ASSERT_TRUE(writer.commit().ok());
    EXPECT_MENTIONS(writer.set_aside_note(), "step_00000020");
    EXPECT_MENTIONS(writer.set_aside_note(), root + "/abandoned-by-step_00000015");
  }
  ASSERT_TRUE(apply_retention(root, 2).ok());
  EXPECT_EQ(steps_of(root), (std::vector<int64_t>{10, 15}));
  EXPECT_TRUE(verify_checkpoint(source).ok());
  EXPECT_EQ(latest_of(root), "step_00000015\n");
  EXPECT_TRUE(verify_checkpoint(root + "/abandoned-by-step_00000015/step_00000020").ok());
  std::string stale = "not cleared";
  EXPECT_EQ(*resolve_checkpoint(root, "latest", nullptr, &stale), root + "/step_00000015");
  EXPECT_EQ(stale, "");
  // The same again (this run's own step 20, then a resume from 15 once more): a new folder.
  commit_checkpoint(root, 20, "c");
  commit_checkpoint(root, 15, "d");
  EXPECT_TRUE(verify_checkpoint(root + "/abandoned-by-step_00000015-2/step_00000020").ok());
  EXPECT_EQ(steps_of(root), (std::vector<int64_t>{10, 15}));
  // Nothing above the committed step: nothing moves.
  CheckpointWriter next(root, 16);
  ASSERT_TRUE(next.begin().ok());
  ASSERT_TRUE(next.commit().ok());
  EXPECT_EQ(next.set_aside_note(), "");
}

// Each resume from an older step sets a timeline aside; on a months-long job (restarts
// from a damaged newest checkpoint, repeated resumes) those folders would pile up
// forever. With keep_last N, retention deletes abandoned-by-step_S/ together with step S
// (once N newer checkpoints exist), and never while step S is kept; keep_last 0 keeps all.
// Other folders (a user's own, a name that only looks alike) are left alone.
TEST(CheckpointDir, RetentionRemovesAnAbandonedTimelineWithTheStepThatSetItAside) {
  TempDir dir;
  const std::string root = dir.file("ckpt");
  commit_checkpoint(root, 10, "a");
  commit_checkpoint(root, 20, "a");
  commit_checkpoint(root, 15, "b");  // sets step 20 aside into abandoned-by-step_00000015
  commit_checkpoint(root, 20, "b");
  commit_checkpoint(root, 15, "c");  // again: abandoned-by-step_00000015-2
  const std::string first = root + "/abandoned-by-step_00000015";
  const std::string second = root + "/abandoned-by-step_00000015-2";
  ASSERT_TRUE(fs::is_directory(first));
  ASSERT_TRUE(fs::is_directory(second));
  fs::create_directories(root + "/abandoned-by-step_00000001-keep");  // not accumd's name
  fs::create_directories(root + "/my-notes");
  commit_checkpoint(root, 16, "c");
  ASSERT_TRUE(apply_retention(root, 2).ok());  // keeps 15 and 16: 15 set them aside
  EXPECT_EQ(steps_of(root), (std::vector<int64_t>{15, 16}));
  EXPECT_TRUE(fs::is_directory(first));
  EXPECT_TRUE(fs::is_directory(second));
  commit_checkpoint(root, 17, "c");
  ASSERT_TRUE(apply_retention(root, 0).ok());  // 0 keeps everything
  EXPECT_TRUE(fs::is_directory(first));
  ASSERT_TRUE(apply_retention(root, 2).ok());  // keeps 16 and 17: step 15 is gone
  EXPECT_EQ(steps_of(root), (std::vector<int64_t>{16, 17}));
  EXPECT_FALSE(fs::exists(first));
  EXPECT_FALSE(fs::exists(second));
  EXPECT_TRUE(fs::is_directory(root + "/abandoned-by-step_00000001-keep"));
  EXPECT_TRUE(fs::is_directory(root + "/my-notes"));
  EXPECT_TRUE(temp_entries(root).empty());
  EXPECT_EQ(*resolve_checkpoint(root, "latest"), root + "/step_00000017");
}

// `latest` names step 4, but step 5 was committed after it (then `latest` could not be
// replaced): the complete step 5 is resumed from, and the caller learns both names. A
// newer step that does not verify does not win; it is reported as passed over.
TEST(CheckpointDir, NewerCompleteCheckpointWinsOverALaggingLatest) {
  TempDir dir;
  const std::string root = dir.file("ckpt");
  const std::string fourth = commit_checkpoint(root, 4, "a");
  const std::string fifth = commit_checkpoint(root, 5, "b");
  ASSERT_TRUE(write_file_durable(root + "/latest", "step_00000004\n").ok());
  std::string passed_over = "x", stale = "x";
  auto resolved = resolve_checkpoint(root, "latest", &passed_over, &stale);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(*resolved, fifth);
  EXPECT_MENTIONS(stale, fourth);
  EXPECT_MENTIONS(stale, fifth);
  EXPECT_EQ(passed_over, "");
  // Step 5 damaged: `latest`'s step 4 it is, and step 5 is named as passed over.
  std::string state = *read_file(fifth + "/state.json");
  state[0] = '[';
  ASSERT_TRUE(write_file_durable(fifth + "/state.json", state).ok());
  resolved = resolve_checkpoint(root, "latest", &passed_over, &stale);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(*resolved, fourth);
  EXPECT_EQ(stale, "");
  EXPECT_MENTIONS(passed_over, fifth);
}

TEST(CheckpointDir, ResumeFromAFileSaysItIsNotADirectory) {
  TempDir dir;
  const std::string root = dir.file("ckpt");
  commit_checkpoint(root, 1, "a");
  const std::string file = dir.file("passwd");
  ASSERT_TRUE(write_file_durable(file, "root:x:0:0\n").ok());
  auto resolved = resolve_checkpoint(root, file);
  ASSERT_FALSE(resolved.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(resolved.status())) << resolved.status();
  const std::string message(resolved.status().message());
  EXPECT_MENTIONS(message, file + " is not a directory");
  EXPECT_EQ(message.find("does not exist"), std::string::npos) << message;
}

// The disk fills up after step 5's files and manifest are written, as `latest` is
// replaced: the commit reports the checkpoint complete and `latest` not updated (not
// "lost"), leaves no temp file, and a resume from "latest" takes step 5.
TEST(CheckpointDir, FullDiskAtLatestKeepsTheCompleteCheckpointAndNoTempFile) {
  TempDir dir;
  accum::testing::ScratchTmpfs disk(dir.file("disk"), 512 * 1024);
  ACCUM_SKIP_UNLESS_MOUNTED(disk);
  const std::string root = dir.file("disk/ckpt");
  const std::string fourth = commit_checkpoint(root, 4, "a", 64 * 1024);
  CheckpointWriter writer(root, 5);
  ASSERT_TRUE(writer.begin().ok());
  ASSERT_TRUE(
      write_file_durable(writer.path() + "/model.safetensors", std::string(65536, 'm')).ok());
  ASSERT_TRUE(write_file_durable(writer.path() + "/state.json", "{\"step\": 5}\n").ok());
  // Full, then exactly one page free: manifest.json (under a page) fits, `latest` does not.
  ASSERT_GT(disk.fill("filler"), 0u);
  fs::resize_file(dir.file("disk/filler"), fs::file_size(dir.file("disk/filler")) - 4096);
  auto committed = writer.commit();
  ASSERT_FALSE(committed.ok()) << "the disk did not fill up where this test needs it";
  EXPECT_TRUE(writer.committed());
  EXPECT_TRUE(absl::IsResourceExhausted(committed.status())) << committed.status();
  const std::string message(committed.status().message());
  EXPECT_MENTIONS(message, "checkpoint step 5 is complete in " + root + "/step_00000005");
  EXPECT_MENTIONS(message, "`latest` could not be updated (disk full)");
  EXPECT_MENTIONS(message, "still names step_00000004");
  EXPECT_MENTIONS(message, "No space left on device");
  EXPECT_TRUE(temp_entries(root).empty()) << temp_entries(root).front();
  EXPECT_EQ(latest_of(root), "step_00000004\n");
  EXPECT_TRUE(verify_checkpoint(root + "/step_00000005").ok());
  EXPECT_EQ(*resolve_checkpoint(root, "latest"), root + "/step_00000005");
  EXPECT_TRUE(verify_checkpoint(fourth).ok());
}

TEST(CheckpointDir, RetentionRemovesOnlyTempsOfDeadWriters) {
  TempDir dir;
  const std::string root = dir.file("ckpt");
  commit_checkpoint(root, 1, "a");
  pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(dead, nullptr, 0), dead);
  const std::string mine = root + "/.tmp-step_00000009-" + std::to_string(::getpid());
  const std::string stale = root + "/.tmp-step_00000009-" + std::to_string(dead);
  fs::create_directory(mine);
  fs::create_directory(stale);
  ASSERT_TRUE(apply_retention(root, 2).ok());
  EXPECT_TRUE(fs::exists(mine)) << "a live writer's temp dir was removed";
  EXPECT_FALSE(fs::exists(stale));
}

}  // namespace
}  // namespace accum::io
