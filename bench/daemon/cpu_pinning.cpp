// bench/daemon/cpu_pinning.cpp — /proc scan and sched_setaffinity.
#include "bench/daemon/cpu_pinning.h"

#include <sched.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace accum::bench {
namespace fs = std::filesystem;

absl::StatusOr<std::vector<int>> parse_cpu_list(const std::string& text) {
  std::vector<int> cpus;
  for (const absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    const std::vector<std::string> range = absl::StrSplit(part, '-');
    int first = 0;
    int last = 0;
    if (range.size() > 2 || !absl::SimpleAtoi(range.front(), &first) ||
        !absl::SimpleAtoi(range.back(), &last) || first < 0 || last < first ||
        last >= CPU_SETSIZE) {
      return absl::InvalidArgumentError(
          absl::StrCat("CPU list '", text, "': expected numbers and ranges like 0,2-3"));
    }
    for (int cpu = first; cpu <= last; ++cpu) cpus.push_back(cpu);
  }
  if (cpus.empty()) return absl::InvalidArgumentError(absl::StrCat("CPU list '", text, "': empty"));
  return cpus;
}

absl::StatusOr<int> pin_job_processes(const std::string& job_dir, const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int cpu : cpus) CPU_SET(cpu, &set);
  const std::string needle = job_dir + "/spec.json";
  int pinned = 0;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator("/proc", error)) {
    int pid = 0;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &pid)) continue;
    std::ifstream cmdline(entry.path() / "cmdline");
    std::stringstream contents;
    contents << cmdline.rdbuf();
    if (contents.str().find(needle) == std::string::npos) continue;
    for (const auto& task : fs::directory_iterator(entry.path() / "task", error)) {
      int tid = 0;
      if (absl::SimpleAtoi(task.path().filename().string(), &tid) &&
          sched_setaffinity(tid, sizeof(set), &set) == 0) {
        ++pinned;
      }
    }
  }
  if (pinned == 0) {
    return absl::NotFoundError(absl::StrCat("no process names ", needle, " on its command line"));
  }
  return pinned;
}

}  // namespace accum::bench
