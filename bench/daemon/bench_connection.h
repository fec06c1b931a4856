// bench/daemon/bench_connection.h — channels and authenticated contexts for
// the daemon benchmark.
//
// A "private" channel gets its own TCP connection: gRPC shares subchannels
// (connections) between channels with equal arguments through a global pool,
// so each private channel asks for a local subchannel pool. A "shared" channel
// multiplexes every client thread's calls over one HTTP/2 connection.
//
// Thread safety: BenchConnection is immutable after open(); contexts and
// channels may be made from any thread.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "proto/accum.grpc.pb.h"

namespace accum::bench {

class BenchConnection {
 public:
  // Reads the bearer token from `token_file` ("" = no token).
  static absl::StatusOr<BenchConnection> open(const std::string& server,
                                              const std::string& token_file);

  // A channel on its own TCP connection (see the file comment).
  std::shared_ptr<grpc::Channel> private_channel() const;
  // One process-wide channel, created on first use by the caller and reused.
  std::shared_ptr<grpc::Channel> shared_channel() const { return shared_; }

  // A context carrying the token, with a deadline `deadline` from now.
  std::unique_ptr<grpc::ClientContext> context(std::chrono::milliseconds deadline) const;
  const std::string& server() const { return server_; }

 private:
  std::string server_;
  std::string authorization_;  // "Bearer <token>", or "" without a token
  std::shared_ptr<grpc::Channel> shared_;
};

}  // namespace accum::bench
