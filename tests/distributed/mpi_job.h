// tests/distributed/mpi_job.h — helpers for tests that run accum-worker as N ranks under
// the real mpirun: a job folder with a corpus and specs, the launcher command line
// (ACCUM_MPIRUN from CMake, one thread per rank so 4 ranks fit 2 cores), finding a
// rank's process, and the parameter arithmetic the counters are checked against.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tests/common/proc_stat.h"
#include "tests/worker/worker_test_util.h"

namespace accum::testing {

using Overrides = std::map<std::string, std::string>;

// mpirun ... -x OMP_NUM_THREADS=1 -np `ranks` [extra...] <build>/bin/accum-worker --spec `spec`.
std::vector<std::string> mpirun_argv(int ranks, const std::string& spec,
                                     const std::vector<std::string>& extra_mpirun_args = {});

// A job folder holding corpus.txt; specs are tiny_spec_json() with overrides.
class MpiJobDir {
 public:
  MpiJobDir();
  const TempDir& dir() const { return dir_; }
  std::string operator/(const std::string& name) const { return dir_ / name; }
  // Writes `name`.json and returns its path.
  std::string write_spec(const std::string& name, const Overrides& overrides) const;
  // Writes `name`.json and runs it on `ranks` ranks to completion.
  RunResult run_job(const std::string& name, int ranks, const Overrides& overrides,
                    int timeout_s = 240) const;

 private:
  TempDir dir_;
};

// `base` with `more` applied on top.
Overrides merged(Overrides base, const Overrides& more);

// Overrides that give a run its own metrics file and checkpoint folder: `tag`.jsonl, ckpt_`tag`.
Overrides outputs_for(const std::string& tag, Overrides more = {});

// The pid of the accum-worker process of MPI rank `rank` whose command line names
// `spec_path`, or -1 (reads /proc/*/cmdline and OMPI_COMM_WORLD_RANK in /proc/*/environ).
pid_t find_rank_pid(const std::string& spec_path, int rank);
// How many accum-worker processes naming `spec_path` are alive.
int count_rank_processes(const std::string& spec_path);
// SIGKILLs every accum-worker process naming `spec_path` (a test's cleanup).
void kill_rank_processes(const std::string& spec_path);

// Gradient buckets the reducer cuts (grad_reducer.cpp: bucket_bytes/4 elements, rounded
// down to a multiple of N under ZeRO-1) from a buffer of n elements.
int64_t expected_bucket_count(int64_t n, double bucket_mb, int world, int zero_stage);

}  // namespace accum::testing
