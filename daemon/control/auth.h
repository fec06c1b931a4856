// control/auth.h — bearer-token authentication for accumd's RPCs.
//
// Clients send `authorization: Bearer <token>`; the token is compared in
// constant time (CRYPTO_memcmp over equal-length SHA-256 digests, so neither the
// content nor the length leaks through timing). The health service is the only
// RPC that does not ask (load balancers and systemd probes have no token).
//
// Thread safety: immutable after construction.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/server_context.h"

namespace accum::control {

class TokenAuth {
 public:
  // An empty token disables authentication (accumd warns at start-up).
  explicit TokenAuth(std::string token);
  // Reads the token from a file (surrounding whitespace trimmed); INVALID_ARGUMENT
  // when the file is missing or empty.
  static absl::StatusOr<std::string> read_token_file(const std::string& path);

  bool enabled() const { return !token_digest_.empty(); }
  // OK, or UNAUTHENTICATED saying what was missing.
  grpc::Status check(const grpc::ServerContext& context) const;

 private:
  std::string token_digest_;  // SHA-256 of the token; empty when disabled
};

}  // namespace accum::control
