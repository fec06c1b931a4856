#include "tests/distributed/mpi_job.h"

#include <dirent.h>
#include <signal.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace accum::testing {
namespace {

// tests/worker's helpers find bin/accum-worker through $ACCUM_BUILD_DIR; ctest runs the
// tests inside the build tree's tests/distributed folder, so default it to this build.
const bool kBuildDirDefaulted = [] {
  setenv("ACCUM_BUILD_DIR", ACCUM_DEFAULT_BUILD_DIR, /*overwrite=*/0);
  return true;
}();

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  std::string part;
  while (std::getline(stream, part, separator)) {
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

// NUL-separated file of /proc (cmdline, environ) as strings.
std::vector<std::string> read_proc_strings(const std::string& path) {
  return split(read_file(path), '\0');
}

bool is_worker_of(const std::string& pid_dir, const std::string& spec_path) {
  const auto args = read_proc_strings(pid_dir + "/cmdline");
  if (args.empty() || args[0].find("accum-worker") == std::string::npos) return false;
  return std::find(args.begin(), args.end(), spec_path) != args.end();
}

template <typename Visit>
void for_each_worker(const std::string& spec_path, Visit visit) {
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return;
  while (dirent* entry = readdir(proc)) {
    const std::string name = entry->d_name;
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string pid_dir = "/proc/" + name;
    if (is_worker_of(pid_dir, spec_path)) visit(static_cast<pid_t>(std::stol(name)), pid_dir);
  }
  closedir(proc);
}

}  // namespace

std::vector<std::string> mpirun_argv(int ranks, const std::string& spec,
                                     const std::vector<std::string>& extra_mpirun_args) {
  std::vector<std::string> argv = split(ACCUM_MPIRUN_COMMAND, '|');
  // ACCUM_MPIEXEC replaces the mpirun found at configure time: a relocated Open MPI on a
  // host that has none (bench/gpu/bundle.sh).
  if (const char* mpiexec = std::getenv("ACCUM_MPIEXEC")) argv[0] = mpiexec;
  argv.insert(argv.end(), {"-x", "OMP_NUM_THREADS=1", "-np", std::to_string(ranks)});
  argv.insert(argv.end(), extra_mpirun_args.begin(), extra_mpirun_args.end());
  argv.insert(argv.end(), {worker_binary(), "--spec", spec});
  return argv;
}

MpiJobDir::MpiJobDir() { write_file(dir_ / "corpus.txt", make_corpus(60000)); }

std::string MpiJobDir::write_spec(const std::string& name, const Overrides& overrides) const {
  const std::string path = dir_ / (name + ".json");
  write_file(path, tiny_spec_json(overrides));
  return path;
}

RunResult MpiJobDir::run_job(const std::string& name, int ranks, const Overrides& overrides,
                             int timeout_s) const {
  return run(mpirun_argv(ranks, write_spec(name, overrides)), timeout_s);
}

Overrides merged(Overrides base, const Overrides& more) {
  for (const auto& [key, value] : more) base[key] = value;
  return base;
}

Overrides outputs_for(const std::string& tag, Overrides more) {
  more["metrics_path"] = "\"" + tag + ".jsonl\"";
  more["checkpoint.dir"] = "\"ckpt_" + tag + "\"";
  return more;
}

pid_t find_rank_pid(const std::string& spec_path, int rank) {
  pid_t found = -1;
  const std::string wanted = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  for_each_worker(spec_path, [&](pid_t pid, const std::string& pid_dir) {
    const auto env = read_proc_strings(pid_dir + "/environ");
    if (std::find(env.begin(), env.end(), wanted) != env.end()) found = pid;
  });
  return found;
}

int count_rank_processes(const std::string& spec_path) {
  int count = 0;
  // A zombie waiting for mpirun to reap it is no longer running.
  for_each_worker(spec_path, [&](pid_t pid, const std::string&) { count += process_running(pid); });
  return count;
}

void kill_rank_processes(const std::string& spec_path) {
  for_each_worker(spec_path, [](pid_t pid, const std::string&) { kill(pid, SIGKILL); });
}

int64_t expected_bucket_count(int64_t n, double bucket_mb, int world, int zero_stage) {
  int64_t per_bucket = std::max<int64_t>(1, static_cast<int64_t>(bucket_mb * (1 << 20)) / 4);
  if (zero_stage == 1) per_bucket = std::max<int64_t>(world, per_bucket / world * world);
  return (n + per_bucket - 1) / per_bucket;
}

}  // namespace accum::testing
