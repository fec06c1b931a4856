// control/launcher.h — how a job becomes processes: one accum-worker, or
// `mpirun -np world_size` of them.
//
// Layout of one attempt's output under the job dir (the same for both modes, so
// StreamLogs reads one shape):
//   logs/attempt-<n>/launcher.log        mpirun's own output (and the wrapper's)
//   logs/attempt-<n>/1/rank.<r>/stdout   each rank's stdout (mpirun --output-filename)
//   logs/attempt-<n>/1/rank.<r>/stderr   ... and stderr (single process: merged into stdout)
//   logs/attempt-<n>/exit_code           the launcher's exit status once it ended
//
// build_launch() is a pure function (unit-tested); launch() spawns it.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/control/process.h"
#include "proto/accum.pb.h"

namespace accum::control {

// "10000", or "" when this process's environment sets GOMP_SPINCOUNT or OMP_WAIT_POLICY
// (see LauncherConfig::gomp_spincount).
std::string default_gomp_spincount();

// An error writing under the state dir, as a status for clients: RESOURCE_EXHAUSTED when
// `cause` is a full disk (accumctl: exit 8, "free space"), else UNAVAILABLE.
absl::Status state_dir_error(const absl::Status& cause, absl::string_view what);

// A spec's launch.mpirun_args, checked at submit. They are options of mpirun, never a
// program or its arguments, and never what accumd sets itself (-np, hosts, output files):
// an argument list is otherwise a way to run any command as accumd's user, or to start
// more ranks than the job's slots. Allowed, each with its values:
//   --mca NAME VALUE   NAME of the btl, pml, mtl, coll, osc, mpi_, rmaps_base_ or
//                      hwloc_base_ frameworks (not the launch agents: plm_, orte_, odls_)
//   -x NAME[=VALUE]    NAME starting NCCL_, OMP_, GOMP_, UCX_, ACCUM_, CUDA_VISIBLE_DEVICES
//                      or CUDA_DEVICE_ORDER, and not naming a plugin or library to load
//   --bind-to X, --map-by X, --rank-by X
//   --report-bindings, --display-map, --display-allocation, --tag-output,
//   --timestamp-output
// The operator's own --mpirun-arg is not checked. The error names launch.mpirun_args[i].
absl::Status check_job_mpirun_args(const accum::v1::LaunchSpec& launch);

struct LauncherConfig {
  std::string worker_binary;             // accum-worker
  std::string mpirun = "mpirun";         // Open MPI's launcher
  std::vector<std::string> mpirun_args;  // added to every mpirun line (e.g. --mca btl ...)
  int cores = 1;                         // this host's cores (decides --oversubscribe)
  bool running_as_root = false;          // adds --allow-run-as-root
  std::string control_addr;              // ACCUM_CONTROL_ADDR for rank 0
  std::string token_file;                // ACCUM_TOKEN_FILE ("" when auth is off)
  std::string tls_ca;                    // ACCUM_CONTROL_TLS_CA ("" when TLS is off)
  // GOMP_SPINCOUNT for every rank ("" = none set): how long an OpenMP thread of the CPU back
  // end spins at a barrier before it sleeps. With libgomp's default (300,000 rounds) the
  // README's example ran 13x slower beside one busy core, its threads spinning on the core
  // their partner needed; 10,000 made that 6x faster and cost 1.5% on idle cores (RESULTS
  // 1). A daemon started with GOMP_SPINCOUNT or OMP_WAIT_POLICY passes that choice on instead.
  std::string gomp_spincount = default_gomp_spincount();
};

struct LaunchInfo {
  std::string id;
  std::string job_dir;
  int world_size = 1;
  int attempt = 0;
  accum::v1::LaunchSpec launch;  // hostfile, extra mpirun arguments
  std::string link_key;          // ACCUM_LINK_KEY for the workers ("" for none)
};

// A new attempt's link key: 128 random bits in hex. Kept in the attempt's log folder
// (link_key_path, mode 0600) so that an accumd restarted while the attempt runs can check
// the hello of the worker it re-attaches to.
std::string new_link_key();
std::string link_key_path(const std::string& job_dir, int attempt);
absl::Status write_link_key(const std::string& job_dir, int attempt, const std::string& key);
// The key write_link_key() kept, "" when there is none (an attempt of an older accumd).
std::string read_link_key(const std::string& job_dir, int attempt);

std::string attempt_log_dir(const std::string& job_dir, int attempt);
std::string job_spec_path(const std::string& job_dir);  // <job_dir>/spec.json
// Writes the spec the next attempt runs to job_spec_path(), so that it is either
// the old file or the complete new one, durably (temp + fsync + rename + fsync
// of job_dir). UNAVAILABLE naming the path that failed and why.
absl::Status write_job_spec(const std::string& job_dir, const accum::v1::JobSpec& spec);

// The environment variable that tags every process of a launch with its job folder.
inline constexpr const char* kJobDirEnv = "ACCUM_JOB_DIR";

// The command line, environment and files of one attempt.
SpawnRequest build_launch(const LauncherConfig& config, const LaunchInfo& job);
// Creates the attempt's log folder and spawns build_launch(). Returns the pid of
// the launcher (wrapper shell) process.
absl::StatusOr<pid_t> launch(const LauncherConfig& config, const LaunchInfo& job);

}  // namespace accum::control
