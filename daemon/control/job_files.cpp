// control/job_files.cpp — checkpoint listing, log discovery and tails.
#include "daemon/control/job_files.h"

#include <sys/stat.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string_view>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/control/launcher.h"

namespace accum::control {
namespace fs = std::filesystem;

std::vector<accum::v1::CheckpointInfo> list_job_checkpoints(const std::string& checkpoint_dir) {
  std::vector<accum::v1::CheckpointInfo> result;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(checkpoint_dir, error)) {
    const std::string name = entry.path().filename().string();
    int64_t step = 0;
    if (name.rfind("step_", 0) != 0 || !absl::SimpleAtoi(name.substr(5), &step)) continue;
    if (!fs::exists(entry.path() / "manifest.json", error)) continue;  // incomplete
    accum::v1::CheckpointInfo info;
    info.set_step(step);
    info.set_path(entry.path().string());
    int64_t bytes = 0;
    for (const auto& file : fs::directory_iterator(entry.path(), error)) {
      if (file.is_regular_file(error)) bytes += static_cast<int64_t>(file.file_size(error));
    }
    info.set_bytes(bytes);
    struct stat st {};
    if (stat((entry.path() / "manifest.json").c_str(), &st) == 0) {
      info.set_time_unix_ms(static_cast<int64_t>(st.st_mtim.tv_sec) * 1000 +
                            st.st_mtim.tv_nsec / 1000000);
    }
    result.push_back(std::move(info));
  }
  std::sort(result.begin(), result.end(),
            [](const auto& a, const auto& b) { return a.step() < b.step(); });
  return result;
}

int remove_partial_checkpoints(const std::string& checkpoint_dir) {
  int removed = 0;
  std::error_code error;
  std::vector<fs::path> partial;
  for (const auto& entry : fs::directory_iterator(checkpoint_dir, error)) {
    if (entry.path().filename().string().rfind(".tmp", 0) == 0) partial.push_back(entry.path());
  }
  for (const auto& path : partial) {
    if (fs::remove_all(path, error) > 0) ++removed;
  }
  return removed;
}

std::map<int, std::vector<std::string>> rank_log_files(const std::string& job_dir) {
  std::map<int, std::vector<std::string>> files;
  std::vector<std::pair<int, fs::path>> attempts;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(job_dir + "/logs", error)) {
    int attempt = 0;
    const std::string name = entry.path().filename().string();
    if (name.rfind("attempt-", 0) == 0 && absl::SimpleAtoi(name.substr(8), &attempt)) {
      attempts.emplace_back(attempt, entry.path());
    }
  }
  std::sort(attempts.begin(), attempts.end());
  for (const auto& [attempt, dir] : attempts) {
    std::vector<std::pair<int, fs::path>> ranks;
    for (const auto& entry : fs::directory_iterator(dir / "1", error)) {
      int rank = 0;
      const std::string name = entry.path().filename().string();
      if (name.rfind("rank.", 0) == 0 && absl::SimpleAtoi(name.substr(5), &rank)) {
        ranks.emplace_back(rank, entry.path());
      }
    }
    for (const auto& [rank, rank_dir] : ranks) {
      for (const char* stream : {"stdout", "stderr"}) {
        if (fs::exists(rank_dir / stream, error))
          files[rank].push_back((rank_dir / stream).string());
      }
    }
  }
  return files;
}

std::vector<std::string> tail_lines(const std::string& path, int count) {
  std::ifstream file(path);
  std::deque<std::string> lines;
  for (std::string line; std::getline(file, line);) {
    lines.push_back(std::move(line));
    if (count > 0 && static_cast<int>(lines.size()) > count) lines.pop_front();
  }
  return {lines.begin(), lines.end()};
}

namespace {

// How accum-worker reports the error it exits with (daemon/worker/main.cpp).
constexpr std::string_view kWorkerErrorPrefix = "accum-worker: error: ";

// The last `lines` lines of `rank`'s logs of this attempt (those under `attempt_dir`), each
// tagged with the rank; the last worker error among them goes to *last_error.
std::vector<std::string> rank_lines(const std::map<int, std::vector<std::string>>& ranks, int rank,
                                    const std::string& attempt_dir, int lines,
                                    std::string* last_error) {
  std::vector<std::string> collected;
  const auto it = ranks.find(rank);
  if (it == ranks.end()) return collected;
  for (const auto& file : it->second) {
    if (file.rfind(attempt_dir, 0) != 0) continue;  // only this attempt
    for (auto& line : tail_lines(file, lines)) {
      if (line.empty()) continue;
      if (const auto at = line.find(kWorkerErrorPrefix); at != std::string::npos) {
        *last_error = line.substr(at + kWorkerErrorPrefix.size());
      }
      collected.push_back(absl::StrCat("[rank ", rank, "] ", line));
    }
  }
  return collected;
}

}  // namespace

FailureSummary summarize_failure(const std::string& job_dir, int attempt, int lines) {
  FailureSummary summary;
  const std::string dir = attempt_log_dir(job_dir, attempt);
  const auto launcher_lines = tail_lines(dir + "/launcher.log", 0);
  // mpirun names the culprit as "Process name: [[1234,1],1]" (non-zero exit),
  // "process rank 1 with PID ..." (signal) or "MPI_ABORT was invoked on rank 1" (a
  // rank that ended the job through comm::abort_job, e.g. on input it rejected).
  static const std::regex kProcessName(R"(Process name: \[\[\d+,\d+\],(\d+)\])");
  static const std::regex kProcessRank(R"(process rank (\d+) with PID)");
  static const std::regex kAbortRank(R"(MPI_ABORT was invoked on rank (\d+))");
  for (const auto& line : launcher_lines) {
    std::smatch match;
    if (std::regex_search(line, match, kProcessName) ||
        std::regex_search(line, match, kProcessRank) ||
        std::regex_search(line, match, kAbortRank)) {
      summary.rank = std::stoi(match[1]);
      break;
    }
  }
  const auto ranks = rank_log_files(job_dir);
  const std::string prefix = dir + "/";
  std::vector<std::string> collected =
      rank_lines(ranks, summary.rank >= 0 ? summary.rank : 0, prefix, lines, &summary.last_error);
  // A failure the ranks agreed on before training (the worker's train/failure_agreement.h)
  // ends every rank with the same code, and mpirun blames whichever exited first; rank 0
  // alone printed the error, so the reason is in its log.
  if (summary.last_error.empty() && summary.rank > 0) {
    std::string agreed_error;
    std::vector<std::string> rank0 = rank_lines(ranks, 0, prefix, lines, &agreed_error);
    if (!agreed_error.empty()) {
      summary.rank = 0;
      summary.last_error = std::move(agreed_error);
      collected = std::move(rank0);
    }
  }
  if (collected.empty()) {
    for (auto& line : tail_lines(dir + "/launcher.log", lines)) {
      if (!line.empty()) collected.push_back("[mpirun] " + line);
    }
  }
  if (static_cast<int>(collected.size()) > lines) {
    collected.erase(collected.begin(), collected.end() - lines);
  }
  summary.last_lines = absl::StrJoin(collected, "\n");
  return summary;
}

namespace {

// Hands each complete line appended to `path` since `*offset` to on_line(), reading a chunk
// at a time: a log of any size (a worker that ran for weeks, or spewed debug output) costs
// accumd one chunk, not the file. *offset moves past each line handed over; a partial last
// line waits for its newline. Returns false once on_line() does.
bool read_new_lines(const std::string& path, int64_t* offset,
                    const std::function<bool(std::string&& line)>& on_line) {
  constexpr size_t kChunk = 1 << 20;
  std::ifstream file(path, std::ios::binary);
  if (!file) return true;
  file.seekg(*offset);
  std::string chunk(kChunk, '\0');
  std::string line;  // carried across chunks until its newline
  while (file) {
    file.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    const size_t got = static_cast<size_t>(file.gcount());
    size_t start = 0;
    for (size_t end = chunk.find('\n'); end < got; end = chunk.find('\n', start)) {
      line.append(chunk, start, end - start);
      *offset += static_cast<int64_t>(line.size()) + 1;
      if (!on_line(std::move(line))) return false;
      line.clear();
      start = end + 1;
    }
    line.append(chunk, start, got - start);
  }
  return true;
}

}  // namespace

void stream_job_logs(
    const std::string& job_dir, int rank, int tail, bool follow,
    const std::function<bool(int rank, int64_t index, const std::string& line)>& emit,
    const std::function<bool()>& should_stop) {
  std::map<std::string, int64_t> offsets;  // file -> bytes already emitted
  std::map<int, int64_t> next_index;       // rank -> lines so far
  // First pass: the tail of each rank across all its files (all of it, as it is read, when
  // tail is 0).
  for (const auto& [file_rank, files] : rank_log_files(job_dir)) {
    if (rank >= 0 && file_rank != rank) continue;
    int64_t& count = next_index[file_rank];
    if (tail <= 0) {
      for (const auto& file : files) {
        const bool more = read_new_lines(file, &offsets[file], [&](std::string&& line) {
          return emit(file_rank, count++, line);
        });
        if (!more) return;
      }
      continue;
    }
    std::deque<std::string> lines;
    for (const auto& file : files) {
      read_new_lines(file, &offsets[file], [&](std::string&& line) {
        lines.push_back(std::move(line));
        ++count;
        if (static_cast<int>(lines.size()) > tail) lines.pop_front();
        return true;
      });
    }
    int64_t index = count - static_cast<int64_t>(lines.size());
    for (const auto& line : lines) {
      if (!emit(file_rank, index++, line)) return;
    }
  }
  if (!follow) return;
  bool last_pass = false;
  while (true) {
    for (const auto& [file_rank, files] : rank_log_files(job_dir)) {
      if (rank >= 0 && file_rank != rank) continue;
      for (const auto& file : files) {
        const bool more = read_new_lines(file, &offsets[file], [&](std::string&& line) {
          return emit(file_rank, next_index[file_rank]++, line);
        });
        if (!more) return;
      }
    }
    if (last_pass) return;
    if (should_stop()) {
      last_pass = true;
      continue;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

}  // namespace accum::control
