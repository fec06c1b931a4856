// control/process.cpp — fork/exec with a recorded exit code, /proc inspection.
#include "daemon/control/process.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace accum::control {
namespace {

// The wrapper: ignore HUP (survive a closed terminal), keep a TERM handler so the
// shell itself outlives a group SIGTERM and still records the status, run the
// command, write `$?` atomically (temp + rename).
constexpr const char* kWrapper =
    "trap '' HUP; trap ':' TERM INT; \"$@\"; rc=$?; "
    "echo $rc > \"$ACCUM_EXIT_FILE.tmp\" && mv \"$ACCUM_EXIT_FILE.tmp\" \"$ACCUM_EXIT_FILE\"; "
    "exit $rc";

// Parses /proc/<pid>/stat into (state, ppid, start ticks). The command name may
// contain spaces and parentheses, so fields are counted after the last ')'.
bool read_stat(pid_t pid, char* state, pid_t* ppid, int64_t* start_ticks) {
  std::ifstream file(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream fields(text.substr(close + 2));
  std::string field;
  // Field 3 is the state; we are now at field 3.
  for (int index = 3; fields >> field; ++index) {
    if (index == 3) *state = field.empty() ? '?' : field[0];
    if (index == 4) *ppid = static_cast<pid_t>(std::stol(field));
    if (index == 22) {
      *start_ticks = std::stoll(field);
      return true;
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<pid_t> spawn_process(const SpawnRequest& request) {
  if (request.argv.empty()) return absl::InvalidArgumentError("spawn: empty command");
  std::vector<std::string> argv;
  if (!request.exit_code_path.empty()) {
    argv = {"/bin/sh", "-c", kWrapper, "accum-launch"};
  }
  argv.insert(argv.end(), request.argv.begin(), request.argv.end());
  std::vector<std::string> env_strings;
  for (char** entry = environ; *entry; ++entry) {
    std::string_view text(*entry);
    const auto name = text.substr(0, text.find('='));
    if (request.env.count(std::string(name)) || name == "ACCUM_EXIT_FILE") continue;
    env_strings.emplace_back(text);
  }
  for (const auto& [name, value] : request.env) env_strings.push_back(name + "=" + value);
  if (!request.exit_code_path.empty()) {
    env_strings.push_back("ACCUM_EXIT_FILE=" + request.exit_code_path);
  }
  // Everything the child needs is prepared before fork(): after fork in a
  // multi-threaded process only async-signal-safe calls are allowed.
  std::vector<char*> argv_ptrs, env_ptrs;
  for (auto& arg : argv) argv_ptrs.push_back(arg.data());
  argv_ptrs.push_back(nullptr);
  for (auto& entry : env_strings) env_ptrs.push_back(entry.data());
  env_ptrs.push_back(nullptr);

  const int out =
      open(request.stdout_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot open log file ", request.stdout_path, ": ", std::strerror(errno)));
  }
  const int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t pid = fork();
  if (pid < 0) {
    close(out);
    close(devnull);
    return absl::ResourceExhaustedError(absl::StrCat("fork failed: ", std::strerror(errno)));
  }
  if (pid == 0) {
    setsid();
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);
    for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD}) signal(sig, SIG_DFL);
    dup2(devnull, 0);
    dup2(out, 1);
    dup2(out, 2);
    if (!request.cwd.empty() && chdir(request.cwd.c_str()) != 0) _exit(126);
    execvpe(argv_ptrs[0], argv_ptrs.data(), env_ptrs.data());
    _exit(127);
  }
  close(out);
  close(devnull);
  return pid;
}

std::optional<int64_t> process_start_ticks(pid_t pid) {
  char state = '?';
  pid_t ppid = 0;
  int64_t ticks = 0;
  if (!read_stat(pid, &state, &ppid, &ticks)) return std::nullopt;
  return ticks;
}

bool process_alive(pid_t pid, int64_t start_ticks) {
  if (pid <= 0) return false;
  char state = '?';
  pid_t ppid = 0;
  int64_t ticks = 0;
  if (!read_stat(pid, &state, &ppid, &ticks)) return false;
  return state != 'Z' && state != 'X' && ticks == start_ticks;
}

std::vector<pid_t> process_descendants(pid_t root) {
  std::multimap<pid_t, pid_t> children;  // ppid -> pid
  if (DIR* proc = opendir("/proc")) {
    while (dirent* entry = readdir(proc)) {
      pid_t pid = 0;
      if (!absl::SimpleAtoi(entry->d_name, &pid)) continue;
      char state = '?';
      pid_t ppid = 0;
      int64_t ticks = 0;
      if (read_stat(pid, &state, &ppid, &ticks)) children.emplace(ppid, pid);
    }
    closedir(proc);
  }
  std::vector<pid_t> result;
  std::vector<pid_t> frontier = {root};
  while (!frontier.empty()) {
    const pid_t parent = frontier.back();
    frontier.pop_back();
    auto [begin, end] = children.equal_range(parent);
    for (auto it = begin; it != end; ++it) {
      result.push_back(it->second);
      frontier.push_back(it->second);
    }
  }
  return result;
}

std::vector<pid_t> processes_with_env(const std::string& name, const std::string& value) {
  const std::string wanted = name + "=" + value;
  std::vector<pid_t> found;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return found;
  while (dirent* entry = readdir(proc)) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(entry->d_name, &pid) || pid == getpid()) continue;
    std::ifstream file(absl::StrCat("/proc/", pid, "/environ"), std::ios::binary);
    std::string environment((std::istreambuf_iterator<char>(file)),
                            std::istreambuf_iterator<char>());
    // Entries are NUL-terminated: compare whole entries, so that VALUE does not match a
    // longer value it is a prefix of (job-1 vs job-10).
    bool has = false;
    for (size_t start = 0; start < environment.size() && !has;) {
      size_t end = environment.find('\0', start);
      if (end == std::string::npos) end = environment.size();
      has = environment.compare(start, end - start, wanted) == 0;
      start = end + 1;
    }
    char state = '?';
    pid_t ppid = 0;
    int64_t ticks = 0;
    if (has && read_stat(pid, &state, &ppid, &ticks) && state != 'Z' && state != 'X') {
      found.push_back(pid);
    }
  }
  closedir(proc);
  return found;
}

void signal_process_tree(pid_t root, int signal) {
  if (root <= 0) return;
  const auto descendants = process_descendants(root);
  kill(root, signal);
  for (pid_t pid : descendants) kill(pid, signal);
}

void signal_process_leaves(pid_t root, int signal) {
  if (root <= 0) return;
  const auto descendants = process_descendants(root);
  std::set<pid_t> parents;
  for (pid_t pid : descendants) {
    char state = '?';
    pid_t ppid = 0;
    int64_t ticks = 0;
    if (read_stat(pid, &state, &ppid, &ticks)) parents.insert(ppid);
  }
  bool any = false;
  for (pid_t pid : descendants) {
    if (!parents.count(pid)) {
      kill(pid, signal);
      any = true;
    }
  }
  if (!any) kill(root, signal);
}

std::optional<int> try_reap(pid_t pid) {
  int status = 0;
  const pid_t done = waitpid(pid, &status, WNOHANG);
  if (done == pid) return status;
  if (done < 0 && errno == ECHILD) return std::nullopt;
  return std::nullopt;
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) {
    const int code = WEXITSTATUS(status);
    // The wrapper shell reports a signal-killed command as 128+N.
    if (code > 128 && code < 128 + 65) {
      return absl::StrCat("signal ", code - 128, " (", strsignal(code - 128), ")");
    }
    return absl::StrCat("exit code ", code);
  }
  if (WIFSIGNALED(status)) {
    return absl::StrCat("signal ", WTERMSIG(status), " (", strsignal(WTERMSIG(status)), ")");
  }
  return "unknown status";
}

std::optional<int> read_exit_code_file(const std::string& path) {
  std::ifstream file(path);
  int code = 0;
  if (file >> code) return code;
  return std::nullopt;
}

}  // namespace accum::control
