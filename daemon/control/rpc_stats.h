// control/rpc_stats.h — counts every RPC accumd answers, by full method name
// ("/accum.v1.Control/GetJob") and status code, for the Prometheus endpoint.
//
// Counting is a gRPC server interceptor (rpc_stats_interceptor_factory), so
// every service (Control, WorkerLink, health, reflection) is covered without
// touching the service methods, and an RPC is counted once, when its status
// is sent.
//
// Thread safety: RpcStats is thread-safe; gRPC calls the interceptors
// concurrently.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "grpcpp/support/server_interceptor.h"

namespace accum::control {

class RpcStats {
 public:
  void record(const std::string& method, int status_code);
  // (method, status code name) -> count, sorted.
  std::map<std::pair<std::string, std::string>, int64_t> counts() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, int64_t> counts_;  // GUARDED_BY(mutex_)
};

// The `method` label of an RPC: its full name when accumd serves that method (Control,
// WorkerLink, reflection, health), else "unknown". Any client may call any path, and each
// label value is a series kept for the daemon's lifetime: unknown paths share one.
std::string rpc_method_label(const std::string& method);

// An interceptor factory that records into `stats` (which must outlive the server).
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
rpc_stats_interceptor_factory(RpcStats* stats);

// "OK", "NOT_FOUND", ... for a grpc::StatusCode value.
std::string status_code_name(int code);

}  // namespace accum::control
