// kernels/cuda/matmul_algos.cpp — the ACCUM_CUBLASLT_ALGOS file (see matmul_algos.h).
// Host code only: no CUDA call, so its tests need no GPU.
#include "kernels/cuda/matmul_algos.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <utility>
#include <vector>

namespace accum::kernels::cuda {
namespace {

constexpr char kHeader[] =
    "# accumd: cuBLASLt algorithm choices (ACCUM_CUBLASLT_ALGOS or the spec's "
    "cuda.keep_cublaslt_algorithms); delete this file to time them again\n";

// `source`: what named the file (ACCUM_CUBLASLT_ALGOS, or the spec field).
[[noreturn]] void fail(const std::string& source, const std::string& path,
                       const std::string& what) {
  throw std::runtime_error(source + " file '" + path + "': " + what);
}

std::string system_error(const char* doing) {
  return std::string(doing) + ": " + std::strerror(errno);
}

// Writes all of `text` to `fd`, then fsyncs it.
bool write_all(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return ::fsync(fd) == 0;
}

// The file, open and locked (flock, exclusive) while the object lives: every process of a
// job may share one file, and a reader must not see another's append half-written.
class LockedFile {
 public:
  // A missing file is created when `create`, else open() is false. Without `create`, a file
  // this process may not write (a kept file made read-only) is opened to read, under a
  // shared lock.
  LockedFile(const std::string& source, const std::string& path, bool create)
      : source_(source), path_(path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_APPEND | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
    if (fd_ < 0 && !create && (errno == EACCES || errno == EROFS)) {
      fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      writable_ = false;
    }
    if (fd_ < 0) {
      if (errno == ENOENT && !create) return;
      fail(source, path, system_error("cannot open it"));
    }
    while (::flock(fd_, writable_ ? LOCK_EX : LOCK_SH) != 0) {
      if (errno != EINTR) {
        const std::string why = system_error("cannot lock it");
        ::close(fd_);
        fail(source, path, why);
      }
    }
  }
  ~LockedFile() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the lock
  }
  LockedFile(const LockedFile&) = delete;
  LockedFile& operator=(const LockedFile&) = delete;

  bool open() const { return fd_ >= 0; }
  int fd() const { return fd_; }

  // The whole file. A last line without its newline (a crash in the middle of an append) was
  // never a choice: it is left out, and cut off the file here (under the lock) if writable.
  std::string read_complete_lines() {
    std::string content;
    char buffer[1 << 16];
    for (off_t at = 0;;) {
      const ssize_t n = ::pread(fd_, buffer, sizeof(buffer), at);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail(source_, path_, system_error("cannot read it"));
      if (n == 0) break;
      content.append(buffer, static_cast<size_t>(n));
      at += n;
    }
    if (!content.empty() && content.back() != '\n') {
      const size_t keep = content.rfind('\n') == std::string::npos ? 0 : content.rfind('\n') + 1;
      std::fprintf(stderr,
                   "accum: %s file '%s': dropping its unfinished last line (%zu bytes; a write "
                   "cut short); that GEMM shape is timed again\n",
                   source_.c_str(), path_.c_str(), content.size() - keep);
      if (writable_ && (::ftruncate(fd_, static_cast<off_t>(keep)) != 0 || ::fsync(fd_) != 0)) {
        fail(source_, path_, system_error("cannot cut its unfinished last line"));
      }
      content.resize(keep);
    }
    return content;
  }

 private:
  std::string source_, path_;
  int fd_ = -1;
  bool writable_ = true;
};

std::vector<std::string> split(const std::string& line, char separator) {
  std::vector<std::string> fields;
  std::string field;
  std::istringstream in(line);
  while (std::getline(in, field, separator)) fields.push_back(field);
  if (!line.empty() && line.back() == separator) fields.emplace_back();
  return fields;
}

// A whole-string decimal integer, or false.
bool parse_int(const std::string& text, int* value) {
  if (text.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const long parsed = std::strtol(text.c_str(), &end, 10);
  if (errno != 0 || *end != '\0' || parsed < -1000000 || parsed > 1000000) return false;
  *value = static_cast<int>(parsed);
  return true;
}

bool parse_times(const std::string& text, size_t expected) {
  std::istringstream in(text);
  size_t count = 0;
  for (std::string word; in >> word; ++count) {
    char* end = nullptr;
    std::strtod(word.c_str(), &end);
    if (*end != '\0') return false;
  }
  return count == expected;
}

}  // namespace

std::string algo_file_name(const std::string& machine) {
  std::string name = "cublaslt_algos_";
  bool gap = false;
  for (const char c : machine) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      if (gap && name.back() != '_') name += '_';
      name += c;
      gap = false;
    } else {
      gap = true;
    }
  }
  return name + ".tsv";
}

AlgoTable::AlgoTable(std::string path, std::string machine, std::string source)
    : path_(std::move(path)), machine_(std::move(machine)), source_(std::move(source)) {
  LockedFile file(source_, path_, /*create=*/false);
  if (file.open()) parse(file.read_complete_lines());  // else: every plan is timed, then kept
}

void AlgoTable::parse(const std::string& content) {
  machine_written_ = false;
  choices_.clear();
  std::map<std::string, int> first_line;
  std::istringstream lines(content);
  int number = 0;
  for (std::string line; std::getline(lines, line);) {
    ++number;
    const std::string where = "line " + std::to_string(number) + ": ";
    if (line.empty() || line[0] == '#') continue;
    const std::vector<std::string> fields = split(line, '\t');
    if (fields[0] == "machine") {
      if (fields.size() != 2 || fields[1].empty()) {
        fail(source_, path_, where + "expected 'machine<TAB>NAME'");
      }
      if (machine_written_) fail(source_, path_, where + "a second 'machine' line");
      if (fields[1] != machine_) {
        fail(source_, path_,
             "its choices were timed on '" + fields[1] + "', this is '" + machine_ +
                 "': they do not hold here (delete the file to time them again, or name "
                 "another file)");
      }
      machine_written_ = true;
      continue;
    }
    if (!machine_written_) fail(source_, path_, where + "a choice before the 'machine' line");
    AlgoChoice choice;
    if (fields.size() != 4 || fields[0].empty() || !parse_int(fields[1], &choice.index) ||
        !parse_int(fields[2], &choice.candidates) || choice.candidates < 1 || choice.index < 0 ||
        choice.index >= choice.candidates ||
        !parse_times(fields[3], static_cast<size_t>(choice.candidates))) {
      fail(source_, path_,
           where +
               "expected 'SHAPE<TAB>INDEX<TAB>CANDIDATES<TAB>TIMES' with 0 <= INDEX < "
               "CANDIDATES and one time per candidate, got '" +
               line + "'");
    }
    const auto [seen, inserted] = first_line.emplace(fields[0], number);
    if (!inserted) {
      fail(source_, path_,
           where + "shape '" + fields[0] + "' chosen again (first on line " +
               std::to_string(seen->second) + ")");
    }
    choices_[fields[0]] = choice;
  }
}

const AlgoChoice* AlgoTable::find(const std::string& shape) const {
  const auto found = choices_.find(shape);
  return found == choices_.end() ? nullptr : &found->second;
}

AlgoChoice AlgoTable::record(const std::string& shape, AlgoChoice choice,
                             const std::vector<float>& us) {
  LockedFile file(source_, path_, /*create=*/true);
  parse(file.read_complete_lines());  // what other processes have kept since
  if (const AlgoChoice* kept = find(shape)) return *kept;
  std::string text;
  if (!machine_written_) text = std::string(kHeader) + "machine\t" + machine_ + "\n";
  text +=
      shape + "\t" + std::to_string(choice.index) + "\t" + std::to_string(choice.candidates) + "\t";
  for (size_t i = 0; i < us.size(); ++i) {
    char cell[32];
    std::snprintf(cell, sizeof(cell), "%s%.1f", i ? " " : "", us[i]);
    text += cell;
  }
  text += "\n";
  if (!write_all(file.fd(), text)) fail(source_, path_, system_error("cannot append to it"));
  machine_written_ = true;
  choices_[shape] = choice;
  return choice;
}

int fastest_candidate(const std::vector<float>& us) {
  int best = -1;
  for (int i = 0; i < static_cast<int>(us.size()); ++i) {
    if (us[i] > 0.f && (best < 0 || us[i] < us[best])) best = i;
  }
  return best;
}

}  // namespace accum::kernels::cuda
