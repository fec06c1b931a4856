// accum-worker — one rank of a training job: `accum-worker --spec job.json`, alone or
// under mpirun/srun. Exit codes (exit_codes.h): 0 success (also after SIGTERM: the current
// optimizer step is finished and checkpointed), 2 bad spec/data/checkpoint (or training
// that diverged to NaN/Inf), 1 runtime failure. Under mpirun a failing rank ends the job
// with its code, so mpirun exits with it; a failure before training is agreed on by every
// rank and reported once, by rank 0, naming the ranks when they differ.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "daemon/spec/spec.h"
#include "daemon/worker/comm/communicator.h"
#include "daemon/worker/comm/rank_messages.h"
#include "daemon/worker/exit_codes.h"
#include "daemon/worker/io/mapping_fault.h"
#include "daemon/worker/link/control_link.h"
#include "daemon/worker/train/failure_agreement.h"
#include "daemon/worker/train/trainer.h"

namespace {

constexpr const char* kUsage =
    "usage: accum-worker --spec JOB.json [--print-spec]\n"
    "  Trains the GPT-2 described by JOB.json (accum.v1.JobSpec as JSON) with exact gradient\n"
    "  accumulation. Run it alone, or as N ranks under `mpirun -np N accum-worker --spec ...`.\n"
    "  --print-spec   validate the spec, print it with every default filled in, and exit\n"
    "  SIGTERM, SIGINT or SIGUSR1 finishes the current optimizer step, writes a checkpoint\n"
    "  and exits 0. Under mpirun, send SIGUSR1 to mpirun (`kill -USR1 PID`): Open MPI\n"
    "  forwards it to every rank, while its own Ctrl-C/SIGTERM kills the ranks a second\n"
    "  later. deploy/mpirun.sh turns Ctrl-C into that SIGUSR1.\n";

void on_signal(int) { accum::train::request_stop(); }

using accum::worker::kExitBadInput;
using accum::worker::kExitRuntimeFailure;
using accum::worker::kExitSuccess;

// How the worker's error lines begin: accumd finds the reason a job failed by it.
constexpr char kErrorPrefix[] = "accum-worker: error: ";

// Writes `message` to stderr after kErrorPrefix. One write: std::cerr writes each << at
// once, and under mpirun the ranks' pieces of the same error interleaved within one line.
void print_error(const std::string& message) {
  std::cerr << (kErrorPrefix + message + "\n") << std::flush;
}

// Ends this rank with `code` once MPI is finalized.
[[noreturn]] void exit_with(int code) {
  accum::comm::finalize_communicators();
  // Ends here, without the libraries' teardown: after an out-of-memory, OpenBLAS's exit
  // handler joins a thread that retries its buffer's allocation forever under an
  // address-space limit (ulimit -v), and the rank would spin instead of exiting. Everything
  // that matters is on disk already (checkpoints and metrics are written and closed by the
  // trainer); only the log and the standard streams need flushing.
  spdlog::default_logger()->flush();
  std::cout << std::flush;
  std::_Exit(code);
}

// Reports the error and ends this rank with `code`; in a job of several ranks it
// ends every rank with that code (the others may be waiting in a collective), so the
// job's exit status says what failed.
[[noreturn]] void fail(accum::comm::Communicator* comm, int code, const std::string& message) {
  print_error(message);
  if (comm != nullptr && comm->world_size() > 1) accum::comm::abort_job(comm, message, code);
  exit_with(code);
}

// Ends this rank with `code` after a failure every rank agreed on
// (train/failure_agreement.h): the other ranks end alike and no rank waits for this one,
// so rank 0 alone reports it and no rank needs MPI_Abort. `rank` is this process's.
// `message` holds one line per distinct error, each printed as an error line of its own.
[[noreturn]] void fail_agreed(int rank, int code, const std::string& message) {
  if (rank == 0) {
    print_error(absl::StrJoin(absl::StrSplit(message, '\n'), std::string("\n") + kErrorPrefix));
  }
  exit_with(code);
}

// A short OpenMP spin for every rank unless its environment chose one (GOMP_SPINCOUNT or
// OMP_WAIT_POLICY): threads that spin while their partner waits for a core made a rank 13x
// slower beside one busy process, and the short spin costs 1.5% on idle cores (bench/
// RESULTS.md 1). accumd and deploy/mpirun.sh set it; this covers a plain `mpirun
// accum-worker`. libgomp reads the variable when it loads, before main: so the worker sets
// it and starts itself again, the same process (pid, arguments, MPI environment), before it
// has done anything else. If that fails it carries on with libgomp's default.
void ensure_short_openmp_spin(char** argv) {
  if (std::getenv("GOMP_SPINCOUNT") != nullptr || std::getenv("OMP_WAIT_POLICY") != nullptr) {
    return;
  }
  if (setenv("GOMP_SPINCOUNT", "10000", 1) != 0) return;
  execv("/proc/self/exe", argv);
  std::cerr << "accum-worker: could not restart with GOMP_SPINCOUNT=10000 (" << std::strerror(errno)
            << "); OpenMP threads keep libgomp's long spin\n";
}

// The spec, read by every rank: under mpirun the ranks agree on it before anything else
// (before the back end, which the spec names, sets up), so that a spec every rank rejects
// is reported once, by rank 0, and one rejected on some ranks only names them. Alone, the
// error is reported as it is.
accum::v1::JobSpec load_spec_or_exit(const std::string& spec_path, bool print_spec) {
  auto spec = accum::spec::load_spec_file(spec_path);
  if (print_spec || !accum::comm::launched_under_mpi()) {
    if (!spec.ok()) fail(nullptr, kExitBadInput, std::string(spec.status().message()));
    return *std::move(spec);
  }
  absl::Status agreed;
  try {
    agreed = accum::train::agree_on_failure_over_world(spec.status());
  } catch (const std::exception& e) {
    fail(nullptr, kExitRuntimeFailure, e.what());
  }
  // Whatever the ranks' messages say, a spec is input: the code is the bad-input one.
  if (!agreed.ok()) {
    fail_agreed(accum::comm::world_rank(), kExitBadInput, std::string(agreed.message()));
  }
  return *std::move(spec);
}

// The link to accumd: rank 0's from the environment (ACCUM_CONTROL_ADDR and its TLS
// files), the others' a null link. Only rank 0 reads those files, so the ranks agree on
// its outcome before training: the others would otherwise wait for rank 0 in their first
// collective until its MPI_Abort ended them.
std::unique_ptr<accum::link::ControlLink> make_link_or_exit(accum::comm::Communicator* comm) {
  std::unique_ptr<accum::link::ControlLink> link;
  absl::Status made;
  try {
    link = comm->rank() == 0 ? accum::link::make_link_from_env() : accum::link::make_null_link();
  } catch (const std::exception& e) {
    made = absl::InvalidArgumentError(e.what());  // a bad ACCUM_CONTROL_TLS_CA
  }
  absl::Status agreed;
  try {
    agreed = accum::train::agree_on_failure(comm, made);
  } catch (const std::exception& e) {
    fail(comm, kExitRuntimeFailure, e.what());
  }
  if (!agreed.ok()) fail_agreed(comm->rank(), kExitBadInput, std::string(agreed.message()));
  return link;
}

}  // namespace

int main(int argc, char** argv) {
  std::string spec_path;
  bool print_spec = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--spec") {
      if (i + 1 == argc) {
        std::cerr << (std::string("accum-worker: --spec needs a value: --spec JOB.json\n") +
                      kUsage);
        return kExitBadInput;
      }
      spec_path = argv[++i];
    } else if (arg.rfind("--spec=", 0) == 0) {
      spec_path = arg.substr(7);
    } else if (arg == "--print-spec") {
      print_spec = true;
    } else if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      return kExitSuccess;
    } else {
      std::cerr << ("accum-worker: unknown argument \"" + arg + "\"\n" + kUsage);
      return kExitBadInput;
    }
  }
  if (spec_path.empty()) {
    std::cerr << (std::string("accum-worker: missing --spec JOB.json\n") + kUsage);
    return kExitBadInput;
  }
  if (!print_spec) ensure_short_openmp_spin(argv);
  // Named, so that its lines read "[worker]" beside the communicator's "[comm]".
  spdlog::set_default_logger(spdlog::stdout_color_mt("worker"));
  spdlog::set_pattern("[%H:%M:%S.%e] [%n] %v");
  const accum::v1::JobSpec spec = load_spec_or_exit(spec_path, print_spec);
  if (print_spec) {
    std::cout << accum::spec::spec_to_json(spec, /*pretty=*/true) << std::endl;
    return kExitSuccess;
  }

  std::unique_ptr<accum::comm::Communicator> comm;
  try {
    using accum::comm::CommBackend;
    CommBackend backend = CommBackend::kSingle;
    if (accum::comm::launched_under_mpi()) {
      backend = spec.device() == accum::v1::CUDA ? CommBackend::kNccl : CommBackend::kMpi;
    }
    comm = accum::comm::make_communicator(
        backend,
        std::chrono::milliseconds(static_cast<int64_t>(spec.distributed().timeout_s() * 1000)));
  } catch (const std::exception& e) {
    // The other ranks may have got further (into NCCL's init, which waits for every rank):
    // under mpirun only MPI_Abort ends them. MPI_Finalize here would wait for them instead.
    if (accum::comm::launched_under_mpi()) {
      std::cerr << (std::string("accum-worker: error: ") + e.what() + "\n") << std::flush;
      accum::comm::abort_job(nullptr, e.what(), kExitRuntimeFailure);
    }
    fail(nullptr, kExitRuntimeFailure, e.what());
  }
  // After MPI_Init (which installs its own SIGBUS handler): a data file truncated under
  // the worker is named, and the job restarts from its last checkpoint.
  accum::io::install_mapping_fault_handler(kExitRuntimeFailure);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  // mpirun's own SIGINT/SIGTERM kill the ranks (SIGTERM, then SIGKILL a second later), so
  // a graceful stop of a plain mpirun job needs a signal Open MPI forwards: SIGUSR1.
  std::signal(SIGUSR1, on_signal);
  if (comm->rank() != 0) spdlog::set_level(spdlog::level::warn);

  std::unique_ptr<accum::link::ControlLink> link = make_link_or_exit(comm.get());
  absl::StatusOr<accum::train::TrainResult> result;
  try {
    result = accum::train::run_training(spec, comm.get(), link.get());
  } catch (const std::exception& e) {
    link->close();
    fail(comm.get(), kExitRuntimeFailure, e.what());
  }
  link->close();
  if (!result.ok()) {
    const int code = accum::train::exit_code_for(result.status());
    const std::string message(result.status().message());
    if (accum::train::is_agreed_failure(result.status())) fail_agreed(comm->rank(), code, message);
    fail(comm.get(), code, message);
  }
  accum::comm::finalize_communicators();
  return kExitSuccess;
}
