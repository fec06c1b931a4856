// client/connection.h — accumctl's channel to accumd and the mapping from gRPC
// status codes to exit codes and messages a person can act on.
//
// Exit codes (also printed by `accumctl --help`):
//   0 success (watch: the job SUCCEEDED)     5 invalid argument (bad spec, bad id)
//   1 the job ended FAILED or CANCELLED      6 not found (unknown job id)
//   2 usage error                            7 failed precondition (wrong job state)
//   3 accumd unreachable or not answering    8 resource exhausted (slots, queue, size)
//   4 authentication failed (token)          9 any other error
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "grpcpp/grpcpp.h"
#include "proto/accum.grpc.pb.h"

namespace accum::ctl {

enum ExitCode {
  kOk = 0,
  kJobNotSucceeded = 1,
  kUsage = 2,
  kUnreachable = 3,
  kUnauthenticated = 4,
  kInvalidArgument = 5,
  kNotFound = 6,
  kFailedPrecondition = 7,
  kResourceExhausted = 8,
  kOtherError = 9,
};

struct ConnectionOptions {
  std::string server = "127.0.0.1:7070";
  std::string token_file;
  std::string tls_ca;  // PEM of the CA that signed accumd's certificate (enables TLS)
  bool json = false;
  // gRPC keepalive on the channel: while a call is open (a watch, a logs -f, a long unary
  // call), ping accumd after `keepalive_s` of silence and give the call up with UNAVAILABLE
  // when no answer comes within `keepalive_timeout_s`. accumd allows pings 1 s apart.
  int keepalive_s = 20;
  int keepalive_timeout_s = 10;
};

class Connection {
 public:
  // Fails (returns nullptr with *error set) only for unreadable token/CA files.
  static std::unique_ptr<Connection> open(const ConnectionOptions& options, std::string* error);
  // A context carrying the bearer token; `deadline_s` 0 means none.
  std::unique_ptr<grpc::ClientContext> context(int deadline_s = 30) const;
  accum::v1::Control::Stub& stub() { return *stub_; }
  // Waits until the channel to accumd is connected (true) or `deadline` passes (false).
  bool wait_for_connection(std::chrono::system_clock::time_point deadline);
  // Whether the channel is connected to accumd right now (it does not try to connect).
  bool connected() const;
  const ConnectionOptions& options() const { return options_; }
  // Prints a message for a failed RPC to stderr and returns its exit code. A call that
  // ended without an answer from accumd is told apart as "nothing accepts connections at
  // --server" (accumd is not running there) or "accumd accepted the connection but did not
  // answer" (stopped, wedged or overloaded), by a TCP connect to --server.
  int report(const grpc::Status& status, const std::string& what) const;

 private:
  // Whether the call that failed with `status` got no answer from accumd: its deadline
  // passed, or the connection attempt or keepalive gave up waiting (the channel not READY).
  bool unanswered(const grpc::Status& status) const;

  ConnectionOptions options_;
  std::string token_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<accum::v1::Control::Stub> stub_;
  // When the newest context() was made: how long a call waited before it failed.
  mutable std::chrono::steady_clock::time_point call_started_{};
};

}  // namespace accum::ctl
