// tests/daemon/e2e_state_dir_test.cpp — accumd's state dir holds job specs, logs,
// checkpoints and the job database: owner-only, whatever umask accumd was started with, and
// a state dir the operator made open to others is warned about (and left as it was).
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "gtest/gtest.h"
#include "tests/daemon/daemon_harness.h"

namespace accum::testing {
namespace {

namespace fs = std::filesystem;
using accum::v1::JobStatus;

// Sets the umask for its lifetime (accumd inherits the test's).
class Umask {
 public:
  explicit Umask(mode_t mask) : previous_(::umask(mask)) {}
  ~Umask() { ::umask(previous_); }
  Umask(const Umask&) = delete;
  Umask& operator=(const Umask&) = delete;

 private:
  const mode_t previous_;
};

mode_t mode_of(const fs::path& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode;
}

std::string accumd_log(const DaemonHarness& daemon) {
  std::ifstream in(daemon.dir() + "/accumd.log");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Under umask 022 (files 0644, folders 0755 for most programs), a job run to its end with
// checkpoints leaves nothing in the state dir that group or others may read, write or enter:
// the dir itself, the database, the job's spec, its logs, its metrics and every checkpoint
// file (written by the worker, which inherits accumd's umask).
TEST(DaemonStateDir, EverythingInTheStateDirIsOwnerOnlyUnderUmask022) {
  Umask loose(022);
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(1)));
  JobStatus job;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("private", 4, 1, 2), &job).ok());
  job = daemon.wait_for(job.id(),
                        [](const JobStatus& j) { return j.state() >= accum::v1::SUCCEEDED; });
  ASSERT_EQ(job.state(), accum::v1::SUCCEEDED) << job.message();

  const fs::path state = daemon.dir() + "/state";
  std::set<std::string> seen;  // names of the files checked, to know the walk found them
  EXPECT_EQ(mode_of(state) & 0777, 0700u) << state;
  for (const auto& entry : fs::recursive_directory_iterator(state)) {
    const mode_t mode = mode_of(entry.path());
    if (S_ISLNK(mode)) continue;  // a symlink's own mode means nothing (`latest` may be one)
    EXPECT_EQ(mode & 077, 0u) << entry.path() << " has mode " << std::oct << (mode & 07777);
    seen.insert(entry.path().filename().string());
  }
  for (const char* name : {"accumd.db", "spec.json", "metrics.jsonl", "model.safetensors",
                           "optimizer.safetensors", "manifest.json", "state.json", "logs"}) {
    EXPECT_TRUE(seen.count(name)) << name << " not found under " << state;
  }
  bool has_log = false;
  for (const auto& entry : fs::recursive_directory_iterator(job.job_dir() + "/logs")) {
    has_log = has_log || entry.is_regular_file();
  }
  EXPECT_TRUE(has_log) << "no log file under " << job.job_dir() << "/logs";
}

// A state dir the operator made (mode 0755) is warned about at start and left at 0755: a
// group-readable dir may be deliberate; what accumd writes in it is owner-only all the same.
TEST(DaemonStateDir, AStateDirOthersCanEnterIsWarnedAboutAndLeftAsItIs) {
  DaemonHarness daemon;
  const fs::path state = daemon.dir() + "/state";
  fs::create_directories(state);
  fs::permissions(state, static_cast<fs::perms>(0755));
  ASSERT_TRUE(daemon.start(with_slots(1)));
  const std::string log = accumd_log(daemon);
  EXPECT_NE(log.find("--state-dir " + state.string() + " is accessible by other users (mode 755)"),
            std::string::npos)
      << log;
  EXPECT_EQ(mode_of(state) & 07777, 0755u);
  EXPECT_EQ(mode_of(state / "accumd.db") & 077, 0u);
  EXPECT_EQ(mode_of(state / "jobs") & 077, 0u);
}

}  // namespace
}  // namespace accum::testing
