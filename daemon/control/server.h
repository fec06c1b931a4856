// control/server.h — wiring accumd's gRPC server: Control, WorkerLink, health
// and reflection services on one port, with TLS and size limits. Kept apart
// from main() so tests and benchmarks could embed it.
//
// Thread safety: start() once, then shutdown() from any thread.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "daemon/control/auth.h"
#include "daemon/control/control_service.h"
#include "daemon/control/job_manager.h"
#include "daemon/control/rpc_stats.h"
#include "daemon/control/worker_link_service.h"
#include "grpcpp/server.h"

namespace accum::control {

struct ServerOptions {
  std::string listen = "127.0.0.1:7070";  // HOST:PORT; port 0 picks a free one
  std::string tls_cert;                   // PEM files; both or neither
  std::string tls_key;
  int max_message_bytes = 4 << 20;  // a request larger than this is RESOURCE_EXHAUSTED
};

class DaemonServer {
 public:
  // `manager` and `auth` must outlive the server.
  DaemonServer(JobManager* manager, const TokenAuth* auth)
      : control_(manager, auth), worker_link_(manager, auth) {}
  // Binds and starts serving. Returns the bound address (HOST:PORT).
  absl::StatusOr<std::string> start(const ServerOptions& options);
  void shutdown();
  void wait();
  // Every RPC answered so far, by method and status code.
  const RpcStats& rpc_stats() const { return rpc_stats_; }

 private:
  RpcStats rpc_stats_;
  ControlService control_;
  WorkerLinkService worker_link_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace accum::control
