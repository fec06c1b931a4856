// tests/daemon/job_logs_test.cpp — StreamLogs' reader (stream_job_logs) on a real log
// folder: a tail of a big log costs accumd about one read chunk of memory, not the log.
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "daemon/control/job_files.h"
#include "gtest/gtest.h"

namespace accum::control {
namespace {

namespace fs = std::filesystem;

// A /proc/self/status field in kB ("VmRSS", "VmHWM"), or -1.
int64_t status_kb(const std::string& field) {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind(field + ":", 0) != 0) continue;
    std::string number = line.substr(field.size() + 1);
    number = number.substr(0, number.find("kB"));
    int64_t kb = -1;
    const size_t first = number.find_first_not_of(" \t");
    if (first != std::string::npos) {
      number = number.substr(first);
      number = number.substr(0, number.find_last_not_of(" \t") + 1);
    }
    return absl::SimpleAtoi(number, &kb) ? kb : -1;
  }
  return -1;
}

// A job that trained for weeks logs a line per step: `accumctl logs ID --tail 3` (or an
// `logs -f` that joins late) read the whole log into memory, twice over (the file as one
// string, then its lines), in accumd, for every such call. It now reads a chunk at a time.
TEST(JobLogs, TailOfABigLogReadsItAChunkAtATime) {
  char pattern[] = "/tmp/job-logs-test-XXXXXX";
  const std::string job_dir = mkdtemp(pattern);
  const std::string rank_dir = job_dir + "/logs/attempt-1/1/rank.0";
  fs::create_directories(rank_dir);
  constexpr int kLines = 600000;  // about 60 MiB
  {
    std::ofstream log(rank_dir + "/stdout");
    const std::string padding(80, '.');
    for (int i = 0; i < kLines; ++i) log << "step " << i << " " << padding << "\n";
    log << "a partial line without its newline";
  }
  // In a child, so that its peak memory is this call's alone (VmHWM reset to VmRSS).
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::ofstream("/proc/self/clear_refs") << "5";
    const int64_t before = status_kb("VmRSS");
    std::vector<std::pair<int64_t, std::string>> seen;
    stream_job_logs(
        job_dir, -1, 3, /*follow=*/false,
        [&](int, int64_t index, const std::string& line) {
          seen.emplace_back(index, line);
          return true;
        },
        [] { return true; });
    const bool right = seen.size() == 3 && seen[0].first == kLines - 3 &&
                       seen[2].first == kLines - 1 &&
                       seen[2].second.rfind(absl::StrCat("step ", kLines - 1, " "), 0) == 0;
    const int64_t grown_mib = (status_kb("VmHWM") - before) / 1024;
    _exit(!right ? 255 : static_cast<int>(std::min<int64_t>(grown_mib, 254)));
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  fs::remove_all(job_dir);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_NE(WEXITSTATUS(status), 255) << "the tail was not the last 3 lines with their indices";
  EXPECT_LT(WEXITSTATUS(status), 16) << "MiB of memory to tail a 60 MiB log";
}

}  // namespace
}  // namespace accum::control
