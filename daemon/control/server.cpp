// control/server.cpp — ServerBuilder set-up.
#include "daemon/control/server.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace accum::control {
namespace {

absl::StatusOr<std::string> read_pem(const std::string& flag, const std::string& path) {
  std::ifstream file(path);
  if (!file) return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": cannot read"));
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

}  // namespace

absl::StatusOr<std::string> DaemonServer::start(const ServerOptions& options) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (!options.tls_cert.empty()) {
    auto cert = read_pem("--tls-cert", options.tls_cert);
    if (!cert.ok()) return cert.status();
    auto key = read_pem("--tls-key", options.tls_key);
    if (!key.ok()) return key.status();
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    credentials = grpc::SslServerCredentials(ssl);
  }
  grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default, so a second accumd could bind the same port and
  // take half of the RPCs (jobs it has never heard of); with it off, the second one fails.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Keepalive pings from clients (accumctl: 20 s by default, down to 1 s with --keepalive-s;
  // the workers' link: 10 s) are answered, also on a stream that carries nothing for a long
  // time (an idle watch). gRPC's server defaults take a ping less than 5 minutes after the
  // last, with no data sent in between, as abuse, and after 2 such strikes close the
  // connection (GOAWAY "too_many_pings"): every quiet watch would end after a minute.
  // Pings closer than 500 ms still count as strikes.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  int port = 0;
  builder.AddListeningPort(options.listen, credentials, &port);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(64 << 20);
  builder.RegisterService(&control_);
  builder.RegisterService(&worker_link_);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(rpc_stats_interceptor_factory(&rpc_stats_));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  server_ = builder.BuildAndStart();
  if (!server_ || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen,
                                               " (address in use or invalid HOST:PORT)"));
  }
  const std::string host = options.listen.substr(0, options.listen.rfind(':'));
  return absl::StrCat(host, ":", port);
}

void DaemonServer::shutdown() {
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

void DaemonServer::wait() {
  if (server_) server_->Wait();
}

}  // namespace accum::control
