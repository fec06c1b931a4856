// bench/daemon/bench_connection.cpp — token file, channel arguments, contexts.
#include "bench/daemon/bench_connection.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace accum::bench {

absl::StatusOr<BenchConnection> BenchConnection::open(const std::string& server,
                                                      const std::string& token_file) {
  BenchConnection connection;
  connection.server_ = server;
  if (!token_file.empty()) {
    std::ifstream file(token_file);
    if (!file)
      return absl::InvalidArgumentError(absl::StrCat("--token-file ", token_file, ": cannot read"));
    std::stringstream contents;
    contents << file.rdbuf();
    const std::string token(absl::StripAsciiWhitespace(contents.str()));
    if (token.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--token-file ", token_file, ": empty"));
    }
    connection.authorization_ = "Bearer " + token;
  }
  connection.shared_ = connection.private_channel();
  return connection;
}

std::shared_ptr<grpc::Channel> BenchConnection::private_channel() const {
  grpc::ChannelArguments arguments;
  arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(server_, grpc::InsecureChannelCredentials(), arguments);
}

std::unique_ptr<grpc::ClientContext> BenchConnection::context(
    std::chrono::milliseconds deadline) const {
  auto context = std::make_unique<grpc::ClientContext>();
  if (!authorization_.empty()) context->AddMetadata("authorization", authorization_);
  context->set_deadline(std::chrono::system_clock::now() + deadline);
  return context;
}

}  // namespace accum::bench
