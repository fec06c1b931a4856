// tests/common/proc_stat.h — a process's state and parent from /proc/PID/stat, for tests
// that check which processes a launch left running (zombies count as ended).
#pragma once

#include <sys/types.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

namespace accum::testing {

// /proc/PID/stat's state letter ('Z': exited, not yet reaped) and parent pid; state 0 and
// parent -1 when the process is gone.
struct ProcStat {
  char state = 0;
  pid_t parent = -1;
};

inline ProcStat read_proc_stat(pid_t pid) {
  std::ifstream file("/proc/" + std::to_string(pid) + "/stat");
  const std::string stat((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const size_t after_name = stat.rfind(')');  // the name, in parentheses, may hold spaces
  ProcStat result;
  if (stat.empty() || after_name == std::string::npos) return result;
  int parent = -1;
  std::sscanf(stat.c_str() + after_name + 1, " %c %d", &result.state, &parent);
  result.parent = parent;
  return result;
}

// Whether `pid` exists and has not exited (a zombie has).
inline bool process_running(pid_t pid) {
  const ProcStat stat = read_proc_stat(pid);
  return stat.state != 0 && stat.state != 'Z';
}

}  // namespace accum::testing
