// accumd — the control daemon. Parses flags, opens the job store (reconciling
// jobs left by a previous accumd), serves gRPC, and on SIGTERM/SIGINT stops
// serving while the running workers carry on (a restarted accumd re-attaches).
// SIGHUP (a closed terminal, a `kill -HUP` meant as "reload") is logged and ignored:
// its default action would end accumd at once, and systemd counts such an end as
// clean, so Restart=on-failure would leave the jobs unsupervised.
//
//   accumd --listen HOST:PORT --state-dir DIR [--token-file F] [--slots N] ...
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "daemon/control/metrics_http.h"
#include "daemon/control/prometheus.h"
#include "daemon/control/server.h"
#include "daemon/control/state_dir_lock.h"
#include "daemon/control/tls_names.h"
#include "spdlog/spdlog.h"

namespace {

using accum::control::JobManager;
using accum::control::ManagerConfig;
using accum::control::ServerOptions;

constexpr const char* kUsage = R"(usage: accumd --state-dir DIR [options]

  --listen HOST:PORT        where to serve gRPC (default 127.0.0.1:7070; port 0 picks one)
  --state-dir DIR           job database (accumd.db) and job folders (DIR/jobs/<id>/);
                            one accumd per DIR (it locks DIR/accumd.lock); accumd and its
                            workers create files owner-only (umask 077)
  --token-file F            require 'authorization: Bearer <token>' on every RPC but health
  --slots N                 ranks (CPU) or GPUs this host offers (default: number of cores)
  --tls-cert F --tls-key F  serve TLS with this PEM certificate and key
  --tls-ca F                the CA the workers verify accumd with over their link
                            (default: the --tls-cert itself, right for a self-signed one)
  --worker-bin F            accum-worker to launch (default: next to accumd)
  --mpirun F                mpirun to use (default: mpirun)
  --mpirun-arg A            extra mpirun argument for every job (repeatable)
  --advertise HOST:PORT     address workers dial back (default: the bound address)
  --addr-file F             write the bound HOST:PORT to F once serving
  --heartbeat-timeout-s S   restart a job whose rank 0 is silent this long (default 60)
  --hello-timeout-s S       restart a job whose rank 0 has not connected this long after
                            its launch or accumd's restart (default 300)
  --restart-backoff-ms MS   first restart delay, doubled per restart (default 1000)
  --stop-grace-s S          graceful cancel: STOP, SIGTERM after S, SIGKILL after 2S (default 60)
  --max-restarts N          restarts of a job whose spec leaves max_restarts unset
                            (default 3; a spec's own value, 0 included, wins)
  --log-level L             trace|debug|info|warn|error|critical|off (default info)
  --metrics-listen HOST:PORT  serve Prometheus metrics at http://HOST:PORT/metrics
                            (a bare PORT means 127.0.0.1:PORT; port 0 picks one; default off)
  --metrics-addr-file F     write the metrics endpoint's bound HOST:PORT to F
)";

struct Flags {
  ManagerConfig manager;
  ServerOptions server;
  std::string token_file;
  std::string advertise;
  std::string addr_file;
  std::string log_level = "info";
  std::string metrics_listen;
  std::string metrics_addr_file;
};

void write_addr_file(const std::string& path, const std::string& address) {
  std::ofstream(path + ".tmp") << address << "\n";
  std::filesystem::rename(path + ".tmp", path);
}

// A token or TLS key that other users can read lets them in: on a shared box, say so at
// every start (ssh refuses such keys; accumd keeps serving, as it did before it checked).
void warn_if_others_can_read(const std::string& flag, const std::string& path) {
  struct stat st {};
  if (path.empty() || ::stat(path.c_str(), &st) != 0) return;
  if ((st.st_mode & (S_IRGRP | S_IROTH)) == 0) return;
  spdlog::warn(
      "{} {} is readable by other users (mode {:o}): anyone on this host who reads it "
      "can use accumd as you; chmod 600 it",
      flag, path, st.st_mode & 07777);
}

// The state dir holds job specs (paths, hosts), logs, checkpoints and the job database:
// accumd creates it and everything in it owner-only (umask 077, set in main). A state dir the
// operator made with wider permissions is left as it is (a group-readable dir can be a
// deliberate choice, and chmod of someone's folder is not accumd's to make), but said so:
// what accumd writes into it is owner-only, what older accumds wrote may not be.
void warn_if_state_dir_open(const std::string& state_dir) {
  struct stat st {};
  if (::stat(state_dir.c_str(), &st) != 0 || (st.st_mode & (S_IRWXG | S_IRWXO)) == 0) return;
  spdlog::warn(
      "--state-dir {} is accessible by other users (mode {:o}): job specs, logs, checkpoints "
      "and the job database are in it; what accumd creates there is owner-only, but chmod 700 "
      "it to keep others out of files written before",
      state_dir, st.st_mode & 07777);
}

[[noreturn]] void usage_error(const std::string& message) {
  // The reason alone, where it is seen; the 30 lines of flags would scroll it away.
  std::cerr << "accumd: " << message << "\n(accumd --help lists the flags)\n";
  std::exit(2);
}

int parse_int(const std::string& flag, const std::string& value, int min) {
  int number = 0;
  if (!absl::SimpleAtoi(value, &number) || number < min) {
    usage_error(absl::StrCat(flag, " '", value, "': expected an integer >= ", min));
  }
  return number;
}

int parse_int(const std::string& flag, const std::string& value, int min, int max) {
  int number = 0;
  if (!absl::SimpleAtoi(value, &number) || number < min || number > max) {
    usage_error(
        absl::StrCat(flag, " '", value, "': expected an integer in [", min, ", ", max, "]"));
  }
  return number;
}

// --listen: HOST:PORT with PORT in [0, 65535] (0: any free port); gRPC would take 99999 as
// 34463.
std::string parse_listen(const std::string& flag, const std::string& value) {
  const size_t colon = value.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(value.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    usage_error(absl::StrCat(flag, " '", value,
                             "': expected HOST:PORT with PORT in [0, 65535] (0: any free port)"));
  }
  return value;
}

// spdlog reads an unknown level as "off", which would silence even fatal errors.
std::string parse_log_level(const std::string& flag, const std::string& value) {
  static const std::set<std::string> kLevels = {"trace", "debug", "info",     "warn", "warning",
                                                "error", "err",   "critical", "off"};
  if (!kLevels.count(value)) {
    usage_error(absl::StrCat(flag, " '", value,
                             "': expected one of trace, debug, info, warn, error, critical, off"));
  }
  return value;
}

Flags parse_flags(int argc, char** argv) {
  Flags flags;
  flags.manager.slots = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::error_code error;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", error);
  flags.manager.launcher.worker_binary = (self.parent_path() / "accum-worker").string();
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (i + 1 >= argc) usage_error(flag + ": missing value (or unknown flag)");
    const std::string value = argv[++i];
    if (flag == "--listen")
      flags.server.listen = parse_listen(flag, value);
    else if (flag == "--state-dir")
      flags.manager.state_dir = value;
    else if (flag == "--token-file")
      flags.token_file = value;
    else if (flag == "--slots")
      flags.manager.slots = parse_int(flag, value, 1);
    else if (flag == "--tls-cert")
      flags.server.tls_cert = value;
    else if (flag == "--tls-key")
      flags.server.tls_key = value;
    else if (flag == "--tls-ca")
      flags.manager.launcher.tls_ca = value;
    else if (flag == "--worker-bin")
      flags.manager.launcher.worker_binary = value;
    else if (flag == "--mpirun")
      flags.manager.launcher.mpirun = value;
    else if (flag == "--mpirun-arg")
      flags.manager.launcher.mpirun_args.push_back(value);
    else if (flag == "--advertise")
      flags.advertise = value;
    else if (flag == "--addr-file")
      flags.addr_file = value;
    else if (flag == "--heartbeat-timeout-s")
      flags.manager.heartbeat_timeout = std::chrono::seconds(parse_int(flag, value, 1));
    else if (flag == "--hello-timeout-s")
      flags.manager.hello_timeout = std::chrono::seconds(parse_int(flag, value, 1));
    else if (flag == "--restart-backoff-ms")
      flags.manager.restart_backoff = std::chrono::milliseconds(parse_int(flag, value, 0));
    else if (flag == "--stop-grace-s")
      flags.manager.stop_grace = std::chrono::seconds(parse_int(flag, value, 1));
    else if (flag == "--max-restarts")
      flags.manager.default_max_restarts = parse_int(flag, value, 0, 1000);  // a spec's range
    else if (flag == "--log-level")
      flags.log_level = parse_log_level(flag, value);
    else if (flag == "--metrics-listen")
      flags.metrics_listen = value;
    else if (flag == "--metrics-addr-file")
      flags.metrics_addr_file = value;
    else
      usage_error("unknown flag " + flag);
  }
  if (flags.manager.state_dir.empty()) usage_error("--state-dir is required");
  return flags;
}

}  // namespace

int main(int argc, char** argv) {
  // Owner-only files (0600) and folders (0700), whatever umask accumd was started with: the
  // state dir, the job database, job folders, logs, and the workers' checkpoints and
  // metrics (mpirun and its ranks on this host inherit the umask). A stricter umask stays.
  ::umask(::umask(0) | 077);
  Flags flags = parse_flags(argc, argv);
  spdlog::set_level(spdlog::level::from_str(flags.log_level));
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [accumd] [%l] %v");

  // Signals are taken by one thread with sigwait(); every other thread blocks them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::string token;
  if (!flags.token_file.empty()) {
    auto read = accum::control::TokenAuth::read_token_file(flags.token_file);
    if (!read.ok()) {
      spdlog::error("{}", std::string(read.status().message()));
      return 2;
    }
    token = *read;
    warn_if_others_can_read("--token-file", flags.token_file);
    flags.manager.launcher.token_file = std::filesystem::absolute(flags.token_file).string();
  } else {
    spdlog::warn("no --token-file: every RPC is accepted without authentication");
  }
  accum::control::TokenAuth auth(token);
  warn_if_others_can_read("--tls-key", flags.server.tls_key);
  // Workers dial back over the same port, so under TLS they must verify accumd too.
  if (!flags.server.tls_cert.empty()) {
    std::string& ca = flags.manager.launcher.tls_ca;
    if (ca.empty()) ca = flags.server.tls_cert;
    if (!std::filesystem::exists(ca)) {
      spdlog::error("--tls-ca: '{}' does not exist (expected the PEM CA that signed --tls-cert)",
                    ca);
      return 2;
    }
    ca = std::filesystem::absolute(ca).string();
  }
  flags.manager.launcher.cores =
      static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  flags.manager.launcher.running_as_root = geteuid() == 0;
  if (!std::filesystem::exists(flags.manager.launcher.worker_binary)) {
    spdlog::warn("worker binary {} does not exist (--worker-bin); jobs will fail to launch",
                 flags.manager.launcher.worker_binary);
  }
  warn_if_state_dir_open(flags.manager.state_dir);
  // Before reconcile: a second accumd on this state dir must not touch its jobs.
  auto state_dir_lock = accum::control::StateDirLock::acquire(flags.manager.state_dir);
  if (!state_dir_lock.ok()) {
    spdlog::error("{}", std::string(state_dir_lock.status().message()));
    return absl::IsFailedPrecondition(state_dir_lock.status()) ? 2 : 1;
  }
  // The address workers dial back is known before any job launches: bind first.
  std::unique_ptr<JobManager> manager;
  auto created = JobManager::create(flags.manager);
  if (!created.ok()) {
    spdlog::error("{}", std::string(created.status().message()));
    // Refused (a job database of a newer schema), as the state dir's lock is: 2.
    return absl::IsFailedPrecondition(created.status()) ? 2 : 1;
  }
  manager = *std::move(created);
  accum::control::DaemonServer server(manager.get(), &auth);
  auto bound = server.start(flags.server);
  if (!bound.ok()) {
    spdlog::error("{}", std::string(bound.status().message()));
    return 1;
  }
  std::string advertise = flags.advertise.empty() ? *bound : flags.advertise;
  for (const std::string any : {"0.0.0.0:", "[::]:"}) {
    if (advertise.rfind(any, 0) == 0) advertise = "127.0.0.1:" + advertise.substr(any.size());
  }
  // Every job's rank 0 dials `advertise` and verifies the certificate against its host: a
  // certificate that does not name it fails every job's link (the job trains unreported
  // and is killed at --hello-timeout-s), so accumd refuses to serve with it.
  if (!flags.server.tls_cert.empty()) {
    const absl::Status named = accum::control::certificate_names_host(
        flags.server.tls_cert, accum::control::host_of_address(advertise));
    if (!named.ok()) {
      spdlog::error(
          "{}, the host the workers dial accumd at ({}{}), so every job's link back would "
          "fail its TLS check: pass --advertise HOST:PORT with a host the certificate names "
          "(and that the job's hosts reach), or a certificate that names this one",
          std::string(named.message()), advertise,
          flags.advertise.empty() ? ": the --listen address; 0.0.0.0 is dialled as 127.0.0.1"
                                  : ": --advertise");
      server.shutdown();
      server.wait();
      return 2;
    }
  }
  // Both ports are bound before any job is touched, and before accumd says it listens.
  // Prometheus: the manager's snapshot plus the server's RPC counts, per scrape.
  const auto started = std::chrono::steady_clock::now();
  accum::control::MetricsHttpServer metrics([&]() -> absl::StatusOr<std::string> {
    auto snapshot = manager->metrics_snapshot();
    if (!snapshot.ok()) return snapshot.status();
    snapshot->rpcs = server.rpc_stats().counts();
    const auto up = std::chrono::steady_clock::now() - started;
    snapshot->uptime_s = std::chrono::duration<double>(up).count();
    return accum::control::render_prometheus(*snapshot);
  });
  if (!flags.metrics_listen.empty()) {
    auto metrics_bound = metrics.start(flags.metrics_listen);
    if (!metrics_bound.ok()) {
      spdlog::error("{}", std::string(metrics_bound.status().message()));
      server.shutdown();
      server.wait();
      return 1;  // before the manager started: no job was launched or touched
    }
    std::cout << "accumd metrics at http://" << *metrics_bound << "/metrics" << std::endl;
    if (!flags.metrics_addr_file.empty()) write_addr_file(flags.metrics_addr_file, *metrics_bound);
  }
  manager->set_control_addr(advertise);
  manager->start();
  std::cout << "accumd listening on " << *bound << " (state " << flags.manager.state_dir
            << ", slots " << flags.manager.slots << ", auth " << (auth.enabled() ? "on" : "off")
            << ", tls " << (flags.server.tls_cert.empty() ? "off" : "on") << ")" << std::endl;
  if (!flags.addr_file.empty()) write_addr_file(flags.addr_file, *bound);

  int received = 0;
  while (sigwait(&stop_signals, &received) != 0 || received == SIGHUP) {
    if (received == SIGHUP) {
      spdlog::warn("SIGHUP: ignored (accumd has nothing to reload); SIGTERM stops it");
      received = 0;
    }
  }
  spdlog::info("signal {}: shutting down; running workers keep running", received);
  metrics.stop();
  server.shutdown();
  manager->shutdown();
  server.wait();
  return 0;
}
