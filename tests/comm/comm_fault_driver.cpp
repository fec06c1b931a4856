// tests/comm/comm_fault_driver.cpp — a tiny MPI job in which one rank fails in the
// middle of an optimizer step, for expect_job_failure.sh to assert that the whole job
// ends non-zero within the collective timeout.
//
//   comm_fault_driver --mode hang|kill|exit [--victim R] [--timeout-ms T] [--step S]
//
// Every rank makes one good gradient reduction, then the victim rank
//   hang: sleeps (never joins the next reduction; a stuck rank),
//   kill: raise(SIGKILL) (a crashed rank),
//   exit: _exit(0) without MPI_Finalize (a rank that vanishes quietly),
// while the others reduce again; their GradReducer::finish() times out and they call
// abort_job(), as the trainer does. Exits 0 only if no failure was observed.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "daemon/worker/comm/communicator.h"
#include "daemon/worker/comm/grad_reducer.h"
#include "daemon/worker/exit_codes.h"

namespace {

struct Args {
  std::string mode;
  int victim = 1;
  long timeout_ms = 2000;
  long step = 7;
};

Args parse(int argc, char** argv) {
  Args args;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--mode")
      args.mode = value;
    else if (flag == "--victim")
      args.victim = std::atoi(value);
    else if (flag == "--timeout-ms")
      args.timeout_ms = std::atol(value);
    else if (flag == "--step")
      args.step = std::atol(value);
    else {
      spdlog::error("unknown flag {} (expected --mode, --victim, --timeout-ms, --step)", flag);
      std::exit(2);
    }
  }
  if (args.mode != "hang" && args.mode != "kill" && args.mode != "exit") {
    spdlog::error("--mode must be hang, kill or exit (got '{}')", args.mode);
    std::exit(2);
  }
  return args;
}

void reduce_once(accum::comm::GradReducer* reducer, size_t n) {
  reducer->begin_window();
  reducer->mark_ready_from(n / 2);
  reducer->finish();
}

}  // namespace

int main(int argc, char** argv) {
  using namespace accum::comm;
  const Args args = parse(argc, argv);
  auto comm = make_communicator(CommBackend::kMpi);
  comm->set_default_timeout(std::chrono::milliseconds(args.timeout_ms));
  const size_t n = 100000;
  std::vector<float> grads(n, 1.0f);
  GradReducer reducer(comm.get(), grads.data(), n, {64 << 10, 0, true});
  try {
    comm->set_step(args.step - 1);
    reduce_once(&reducer, n);
    comm->set_step(args.step);
    if (comm->rank() == args.victim) {
      if (args.mode == "hang") std::this_thread::sleep_for(std::chrono::minutes(10));
      if (args.mode == "kill") std::raise(SIGKILL);
      if (args.mode == "exit") _exit(0);
    }
    reduce_once(&reducer, n);
  } catch (const CommError& error) {
    abort_job(comm.get(), error.what(), accum::worker::kExitRuntimeFailure);
  }
  spdlog::warn("rank {}: the step completed although rank {} failed", comm->rank(), args.victim);
  comm.reset();
  finalize_communicators();
  return 0;
}
