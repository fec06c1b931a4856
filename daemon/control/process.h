// control/process.h — spawning and watching worker process trees (POSIX).
//
// accumd must survive its own restart without losing its jobs, so a launched
// process never depends on the daemon: it runs in its own session, writes only
// to files, and ignores SIGHUP. A process is identified by (pid, start ticks
// from /proc/<pid>/stat) so that a reused pid is never mistaken for our worker.
//
// Thread safety: free functions, no shared state.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace accum::control {

struct SpawnRequest {
  std::vector<std::string> argv;           // argv[0] is looked up in PATH
  std::map<std::string, std::string> env;  // added to (and overriding) accumd's environment
  std::string cwd;
  std::string stdout_path;  // created/appended; stderr goes to the same file
  // When set, a wrapper shell records the command's exit status (decimal, or
  // 128+signal) in this file after it ends, so a re-attached daemon learns it.
  std::string exit_code_path;
};

// Starts the process in a new session. Returns its pid.
absl::StatusOr<pid_t> spawn_process(const SpawnRequest& request);

// /proc/<pid>/stat field 22 (start time in clock ticks); nullopt if gone.
std::optional<int64_t> process_start_ticks(pid_t pid);
// True while `pid` runs (not a zombie) and still has the given start ticks.
bool process_alive(pid_t pid, int64_t start_ticks);
// Every descendant of `root` (children first-level first), from /proc.
std::vector<pid_t> process_descendants(pid_t root);
// Live (not zombie) processes whose initial environment holds NAME=VALUE, read from
// /proc/<pid>/environ (only processes of this user are readable; this process is
// never listed). Finds a launch's processes when their root pid is unknown.
std::vector<pid_t> processes_with_env(const std::string& name, const std::string& value);
// Sends `signal` to root and all its descendants (ranks may sit in their own
// process groups under mpirun, so a group kill is not enough).
void signal_process_tree(pid_t root, int signal);
// Sends `signal` only to the leaves of the tree (the worker ranks, not the shell
// or mpirun), so a graceful SIGTERM reaches the trainers and mpirun simply sees
// them exit.
void signal_process_leaves(pid_t root, int signal);
// Non-blocking waitpid for a child of this process: the raw status, or nullopt.
std::optional<int> try_reap(pid_t pid);
// "exit code 3" / "signal 9 (Killed)" from a waitpid status.
std::string describe_wait_status(int status);
// Reads a file written by the exit-code wrapper: the shell's $? (128+N for signal N).
std::optional<int> read_exit_code_file(const std::string& path);

}  // namespace accum::control
