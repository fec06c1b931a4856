// control/launcher.cpp — the mpirun / single-process command lines.
#include "daemon/control/launcher.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "daemon/spec/spec.h"
#include "daemon/worker/io/checkpoint_dir.h"

namespace accum::control {

std::string default_gomp_spincount() {
  const bool chosen =
      std::getenv("GOMP_SPINCOUNT") != nullptr || std::getenv("OMP_WAIT_POLICY") != nullptr;
  return chosen ? "" : "10000";
}

std::string attempt_log_dir(const std::string& job_dir, int attempt) {
  return absl::StrCat(job_dir, "/logs/attempt-", attempt);
}

std::string job_spec_path(const std::string& job_dir) { return job_dir + "/spec.json"; }

absl::Status write_job_spec(const std::string& job_dir, const accum::v1::JobSpec& spec) {
  const std::string path = job_spec_path(job_dir);
  const std::string temp = path + ".tmp";
  // accumd.db is SQLite with synchronous=FULL: once a job's record is committed, the
  // spec.json it points at must survive a power loss too, or the next attempt runs from
  // a missing or empty file. Hence fsync the file, rename, then fsync the folder.
  if (auto status = io::write_file_durable(temp, spec::spec_to_json(spec, /*pretty=*/true));
      !status.ok()) {
    std::error_code ignored;
    std::filesystem::remove(temp, ignored);
    return absl::UnavailableError(absl::StrCat("cannot write the job's spec: ", status.message()));
  }
  std::error_code error;
  std::filesystem::rename(temp, path, error);
  if (error) {
    return absl::UnavailableError(
        absl::StrCat("cannot rename ", temp, " to ", path, ": ", error.message()));
  }
  if (auto status = io::fsync_dir(job_dir); !status.ok()) {
    return absl::UnavailableError(absl::StrCat("cannot write the job's spec: ", status.message()));
  }
  return absl::OkStatus();
}

SpawnRequest build_launch(const LauncherConfig& config, const LaunchInfo& job) {
  const std::string log_dir = attempt_log_dir(job.job_dir, job.attempt);
  SpawnRequest request;
  request.cwd = job.job_dir;
  request.exit_code_path = log_dir + "/exit_code";
  // ACCUM_JOB_DIR tags every process of the launch (local ranks inherit it): an accumd
  // that crashed before it recorded the launcher's pid finds them by it (job ids repeat
  // across state dirs; job folders do not).
  request.env = {{"ACCUM_JOB_ID", job.id},
                 {"ACCUM_ATTEMPT", std::to_string(job.attempt)},
                 {kJobDirEnv, job.job_dir}};
  if (!config.control_addr.empty()) request.env["ACCUM_CONTROL_ADDR"] = config.control_addr;
  if (!config.token_file.empty()) request.env["ACCUM_TOKEN_FILE"] = config.token_file;
  if (!config.tls_ca.empty()) request.env["ACCUM_CONTROL_TLS_CA"] = config.tls_ca;
  if (!config.gomp_spincount.empty()) request.env["GOMP_SPINCOUNT"] = config.gomp_spincount;
  const std::vector<std::string> worker = {config.worker_binary, "--spec",
                                           job_spec_path(job.job_dir)};
  const bool use_mpirun =
      job.world_size > 1 || !job.launch.hostfile().empty() || job.launch.mpirun_args_size() > 0;
  if (!use_mpirun) {
    // Same file layout as mpirun's --output-filename, stdout and stderr merged.
    request.stdout_path = log_dir + "/1/rank.0/stdout";
    request.argv = worker;
    return request;
  }
  request.stdout_path = log_dir + "/launcher.log";
  auto& argv = request.argv;
  argv = {config.mpirun, "-np", std::to_string(std::max(1, job.world_size))};
  if (config.running_as_root) argv.push_back("--allow-run-as-root");
  if (job.world_size > config.cores) argv.push_back("--oversubscribe");
  if (!job.launch.hostfile().empty()) {
    argv.insert(argv.end(), {"--hostfile", job.launch.hostfile()});
  }
  argv.insert(argv.end(), {"--output-filename", log_dir});
  // Forward the link's variables (and GOMP_SPINCOUNT) to remote ranks (local ranks inherit
  // them).
  for (const auto& [name, value] : request.env) argv.insert(argv.end(), {"-x", name});
  argv.insert(argv.end(), config.mpirun_args.begin(), config.mpirun_args.end());
  argv.insert(argv.end(), job.launch.mpirun_args().begin(), job.launch.mpirun_args().end());
  argv.insert(argv.end(), worker.begin(), worker.end());
  return request;
}

absl::StatusOr<pid_t> launch(const LauncherConfig& config, const LaunchInfo& job) {
  const SpawnRequest request = build_launch(config, job);
  std::error_code error;
  std::filesystem::create_directories(std::filesystem::path(request.stdout_path).parent_path(),
                                      error);
  if (error) {
    return absl::UnavailableError(
        absl::StrCat("cannot create ", request.stdout_path, ": ", error.message()));
  }
  return spawn_process(request);
}

}  // namespace accum::control
