// control/auth.cpp — token loading and constant-time comparison.
#include "daemon/control/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace accum::control {
namespace {

std::string sha256(std::string_view text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
}

}  // namespace

TokenAuth::TokenAuth(std::string token) {
  if (!token.empty()) token_digest_ = sha256(token);
}

absl::StatusOr<std::string> TokenAuth::read_token_file(const std::string& path) {
  errno = 0;
  std::ifstream file(path);
  if (!file) {
    // Why (no such file, permission denied): the fix differs.
    const int error = errno;
    return absl::InvalidArgumentError(absl::StrCat("token file ", path, ": cannot read",
                                                   error != 0 ? ": " : "",
                                                   error != 0 ? std::strerror(error) : ""));
  }
  std::stringstream contents;
  contents << file.rdbuf();
  std::string token(absl::StripAsciiWhitespace(contents.str()));
  if (token.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", path, ": empty; expected a token"));
  }
  return token;
}

grpc::Status TokenAuth::check(const grpc::ServerContext& context) const {
  if (!enabled()) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return {grpc::StatusCode::UNAUTHENTICATED,
            "missing 'authorization: Bearer <token>' metadata (accumctl --token-file)"};
  }
  const std::string_view value(it->second.data(), it->second.size());
  constexpr std::string_view kPrefix = "Bearer ";
  if (value.substr(0, kPrefix.size()) != kPrefix) {
    return {grpc::StatusCode::UNAUTHENTICATED, "authorization metadata is not 'Bearer <token>'"};
  }
  const std::string digest = sha256(value.substr(kPrefix.size()));
  if (CRYPTO_memcmp(digest.data(), token_digest_.data(), digest.size()) != 0) {
    return {grpc::StatusCode::UNAUTHENTICATED, "wrong token"};
  }
  return grpc::Status::OK;
}

}  // namespace accum::control
