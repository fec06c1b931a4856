// bench/daemon/cpu_pinning.h — pins a job's worker processes to given CPUs.
//
// Used for the benchmark's "isolated cores" variant: accumd and the load
// generator run under `taskset` on some cores, the training worker is moved to
// the others once it runs, so the measured slowdown is interference (caches,
// memory, the kernel) rather than the load taking the worker's core. The
// worker is found by its command line naming `<job_dir>/spec.json`; every
// thread of it (and of its launcher) gets the affinity.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace accum::bench {

// Parses "0", "0,2" or "0-3" into CPU numbers; INVALID_ARGUMENT otherwise.
absl::StatusOr<std::vector<int>> parse_cpu_list(const std::string& text);

// Sets the affinity of every thread of every process whose command line
// contains `<job_dir>/spec.json`. Returns how many threads were pinned
// (NOT_FOUND when no process matched).
absl::StatusOr<int> pin_job_processes(const std::string& job_dir, const std::vector<int>& cpus);

}  // namespace accum::bench
