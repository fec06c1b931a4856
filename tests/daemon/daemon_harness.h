// tests/daemon/daemon_harness.h — a real accumd for end-to-end tests.
//
// Each test owns one harness: a fresh temporary folder (state dir, token file,
// a TEXT_BYTES corpus), an accumd process on a free loopback port (port 0; the
// daemon writes the bound address to --addr-file), and a gRPC stub carrying the
// token. The destructor kills the daemon and any worker it left running.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "proto/accum.grpc.pb.h"

namespace accum::testing {

struct DaemonOptions {
  int slots = 2;
  std::vector<std::string> extra_args;  // e.g. {"--heartbeat-timeout-s", "5"}
  std::vector<std::string> extra_env;   // NAME=VALUE for accumd (and so its workers)
};

inline DaemonOptions with_slots(int slots) {
  DaemonOptions options;
  options.slots = slots;
  return options;
}

class DaemonHarness {
 public:
  DaemonHarness();
  ~DaemonHarness();

  // Starts accumd (port 0 the first time, the same port on later starts so
  // running workers find it again). Returns false (with a gtest failure) on error.
  bool start(const DaemonOptions& options = {});
  void kill9();  // SIGKILL accumd, reap it
  void stop();   // SIGTERM accumd, wait
  void send_signal(int signal_number);  // to accumd; does not wait
  bool alive();                         // accumd has not exited (reaps it if it has)
  // Waits for accumd to exit by itself; its waitpid status, or nullopt (with a gtest
  // failure) if it still runs after `timeout`.
  std::optional<int> wait_exit(std::chrono::seconds timeout);
  const std::string& address() const { return address_; }
  const std::string& dir() const { return dir_; }
  const std::string& token_file() const { return token_file_; }
  std::string build_dir() const;

  // A script for --worker-bin that runs the real accum-worker and then, if it exited 0,
  // exits 1: workers that fail in their teardown (MPI_Finalize, NCCL's) after finishing.
  std::string worker_failing_after_it() const;
  // A tiny GPT spec (TEXT_BYTES corpus written by the harness) as JSON text.
  std::string spec_json(const std::string& name, int max_steps, int world_size,
                        int checkpoint_every, const std::string& extra_fields = "") const;
  // spec_json's job with steps of seconds rather than milliseconds (4 layers, d_model 256,
  // 320 micro-batches per step), for tests whose RPC must land inside a given step.
  std::string slow_spec_json(const std::string& name, int max_steps) const;
  std::unique_ptr<grpc::ClientContext> context(int deadline_s = 60) const;
  accum::v1::Control::Stub& stub() { return *stub_; }

  // SubmitJob with a spec given as JSON text (parsed with the shared parser).
  grpc::Status submit(const std::string& json, accum::v1::JobStatus* job);
  accum::v1::JobStatus get(const std::string& id);
  // CancelJob (force: SIGKILL at once); the reply's job in *job when given.
  grpc::Status cancel(const std::string& id, bool force, accum::v1::JobStatus* job = nullptr);
  // Polls GetJob until `done(status)` or the timeout; returns the last status.
  accum::v1::JobStatus wait_for(const std::string& id,
                                const std::function<bool(const accum::v1::JobStatus&)>& done,
                                std::chrono::seconds timeout = std::chrono::seconds(120));
  // wait_for(RUNNING, with at least `step` steps reported).
  accum::v1::JobStatus wait_running(const std::string& id, int64_t step);
  // pids of this job's accum-worker processes, by MPI rank (rank 0 first).
  std::vector<pid_t> worker_pids(const std::string& job_dir) const;

 private:
  std::string dir_;
  std::string token_file_;
  std::string corpus_;
  std::string address_;
  pid_t daemon_pid_ = 0;
  std::unique_ptr<accum::v1::Control::Stub> stub_;
};

// The states of a job's transitions, in order.
std::vector<accum::v1::JobState> transition_states(const accum::v1::JobStatus& job);
// Whether the job has ended: SUCCEEDED, FAILED or CANCELLED.
bool ended(const accum::v1::JobStatus& job);
// Whether accumd's log (accumd.log in the harness folder) holds `text` now; and polled
// until `timeout`.
bool log_says(const DaemonHarness& daemon, const std::string& text);
bool wait_for_log(const DaemonHarness& daemon, const std::string& text,
                  std::chrono::seconds timeout);
// The job's metrics.jsonl as (step, loss) in file order.
std::vector<std::pair<int64_t, double>> read_metrics(const std::string& path);
// Runs a shell command line; returns its exit code (-1 when it did not exit) and fills
// *output with its stdout and stderr. `printed`, if given, turns true once the command has
// printed anything (another thread may wait for it; *output is only for after the return).
int run_command(const std::string& command, std::string* output,
                std::atomic<bool>* printed = nullptr);
// Runs accumctl with arguments; returns its exit code and fills *output (stdout+stderr).
int run_accumctl(const DaemonHarness& harness, const std::vector<std::string>& args,
                 std::string* output, bool with_token = true, std::atomic<bool>* printed = nullptr);

}  // namespace accum::testing
