// control/launcher.cpp — the mpirun / single-process command lines.
#include "daemon/control/launcher.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/spec/spec.h"
#include "daemon/worker/io/checkpoint_dir.h"

namespace accum::control {

std::string default_gomp_spincount() {
  const bool chosen =
      std::getenv("GOMP_SPINCOUNT") != nullptr || std::getenv("OMP_WAIT_POLICY") != nullptr;
  return chosen ? "" : "10000";
}

namespace {

bool starts_with_any(const std::string& text, std::initializer_list<const char*> prefixes) {
  for (const char* prefix : prefixes) {
    if (absl::StartsWith(text, prefix)) return true;
  }
  return false;
}

bool is_identifier(const std::string& text) {
  if (text.empty() || std::isdigit(static_cast<unsigned char>(text[0]))) return false;
  for (const char c : text) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

constexpr const char* kAllowedMpirunArgs =
    "expected mpirun options only: --mca NAME VALUE (btl, pml, mtl, coll, osc, mpi_, "
    "rmaps_base_, hwloc_base_), -x NAME[=VALUE] (NCCL_, OMP_, GOMP_, UCX_, ACCUM_, "
    "CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER), --bind-to X, --map-by X, --rank-by X, "
    "--report-bindings, --display-map, --display-allocation, --tag-output, --timestamp-output";

}  // namespace

absl::Status check_job_mpirun_args(const accum::v1::LaunchSpec& launch) {
  const auto& args = launch.mpirun_args();
  auto refuse = [&](int i, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("launch.mpirun_args[", i, "]: '", args[i], "' ",
                                                   why, "; ", kAllowedMpirunArgs));
  };
  auto value_of = [&](int i) -> const std::string* {
    return i + 1 < args.size() ? &args[i + 1] : nullptr;
  };
  for (int i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--mca" || arg == "-mca") {
      if (i + 2 >= args.size()) return refuse(i, "needs a parameter name and a value");
      const std::string& name = args[i + 1];
      if (!is_identifier(name) ||
          !starts_with_any(
              name, {"btl", "pml", "mtl", "coll", "osc", "mpi_", "rmaps_base_", "hwloc_base_"}) ||
          absl::StrContains(name, "agent")) {
        return refuse(i + 1, "is not an MCA parameter a job may set");
      }
      i += 2;
    } else if (arg == "-x") {
      const std::string* value = value_of(i);
      if (value == nullptr) return refuse(i, "needs NAME or NAME=VALUE");
      const std::string name = value->substr(0, value->find('='));
      const bool allowed = is_identifier(name) &&
                           (starts_with_any(name, {"NCCL_", "OMP_", "GOMP_", "UCX_", "ACCUM_"}) ||
                            name == "CUDA_VISIBLE_DEVICES" || name == "CUDA_DEVICE_ORDER") &&
                           !absl::StrContains(name, "PLUGIN") && !absl::StrContains(name, "LIB") &&
                           !absl::StrContains(name, "PATH");
      if (!allowed) return refuse(i + 1, "is not an environment variable a job may set");
      i += 1;
    } else if (arg == "--bind-to" || arg == "--map-by" || arg == "--rank-by") {
      const std::string* value = value_of(i);
      if (value == nullptr || value->empty() || absl::StartsWith(*value, "-")) {
        return refuse(i, "needs a value");
      }
      i += 1;
    } else if (arg == "--report-bindings" || arg == "--display-map" ||
               arg == "--display-allocation" || arg == "--tag-output" ||
               arg == "--timestamp-output") {
      continue;
    } else if (!absl::StartsWith(arg, "-")) {
      return refuse(i, "is not an option (a program or its argument): accumd runs accum-worker");
    } else {
      return refuse(i, "is not allowed here (accumd sets -np, hosts, output files itself)");
    }
  }
  return absl::OkStatus();
}

std::string attempt_log_dir(const std::string& job_dir, int attempt) {
  return absl::StrCat(job_dir, "/logs/attempt-", attempt);
}

std::string job_spec_path(const std::string& job_dir) { return job_dir + "/spec.json"; }

std::string new_link_key() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) return "";  // no key: hellos are not checked
  std::string key;
  for (const unsigned char byte : bytes) absl::StrAppend(&key, absl::Hex(byte, absl::kZeroPad2));
  return key;
}

std::string link_key_path(const std::string& job_dir, int attempt) {
  return attempt_log_dir(job_dir, attempt) + "/link_key";
}

absl::Status write_link_key(const std::string& job_dir, int attempt, const std::string& key) {
  const std::string path = link_key_path(job_dir, attempt);
  std::error_code error;
  std::filesystem::create_directories(attempt_log_dir(job_dir, attempt), error);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || ::write(fd, key.data(), key.size()) != static_cast<ssize_t>(key.size())) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    return absl::UnavailableError(absl::StrCat("cannot write ", path, ": ", std::strerror(err)));
  }
  ::close(fd);
  return absl::OkStatus();
}

std::string read_link_key(const std::string& job_dir, int attempt) {
  std::ifstream file(link_key_path(job_dir, attempt));
  std::string key;
  file >> key;
  return key;
}

absl::Status state_dir_error(const absl::Status& cause, absl::string_view what) {
  if (absl::IsResourceExhausted(cause)) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": ", cause.message(), " (the disk is full; free space and retry)"));
  }
  return absl::UnavailableError(absl::StrCat(what, ": ", cause.message()));
}

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
    return state_dir_error(status, "cannot write the job's spec");
  }
  std::error_code error;
  std::filesystem::rename(temp, path, error);
  if (error) {
    return absl::UnavailableError(
        absl::StrCat("cannot rename ", temp, " to ", path, ": ", error.message()));
  }
  if (auto status = io::fsync_dir(job_dir); !status.ok()) {
    return state_dir_error(status, "cannot write the job's spec");
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
  if (!job.link_key.empty()) request.env["ACCUM_LINK_KEY"] = job.link_key;
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
