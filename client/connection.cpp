// client/connection.cpp — channel set-up and error reporting.
#include "client/connection.h"

#include <algorithm>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "client/tcp_probe.h"

namespace accum::ctl {
namespace {

bool read_file(const std::string& path, std::string* contents) {
  std::ifstream file(path);
  if (!file) return false;
  std::stringstream buffer;
  buffer << file.rdbuf();
  *contents = buffer.str();
  return true;
}

std::string trim(const std::string& text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  return text.substr(first, text.find_last_not_of(" \t\r\n") - first + 1);
}

}  // namespace

std::unique_ptr<Connection> Connection::open(const ConnectionOptions& options, std::string* error) {
  auto connection = std::unique_ptr<Connection>(new Connection());
  connection->options_ = options;
  if (!options.token_file.empty()) {
    std::string token;
    if (!read_file(options.token_file, &token) || trim(token).empty()) {
      *error = "--token-file " + options.token_file + ": cannot read a token from it";
      return nullptr;
    }
    connection->token_ = trim(token);
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options.tls_ca.empty()) {
    grpc::SslCredentialsOptions ssl;
    if (!read_file(options.tls_ca, &ssl.pem_root_certs)) {
      *error = "--tls-ca " + options.tls_ca + ": cannot read";
      return nullptr;
    }
    credentials = grpc::SslCredentials(ssl);
  }
  // A watch waiting out an accumd restart reconnects within 2 s of accumd listening again
  // (gRPC's default backoff grows to 120 s).
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  // Keepalive: a call to an accumd that stops answering (SIGSTOP, a wedged process, a host
  // gone from the network) ends with UNAVAILABLE instead of blocking forever; a watch or a
  // logs -f would otherwise wait on a silent stream for good. Pings go only while a call is
  // open, and keep going for as long as it is: gRPC's default stops a client's pings after 2
  // without data of its own, and a watch sends none after its request. accumd's server
  // permits this (server.cpp), as it does the workers' link (control_link.cpp).
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, options.keepalive_s * 1000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, options.keepalive_timeout_s * 1000);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // As much as accumd sends (a list of many jobs, each with its spec), not gRPC's 4 MiB.
  args.SetMaxReceiveMessageSize(64 << 20);
  connection->channel_ = grpc::CreateCustomChannel(options.server, credentials, args);
  connection->stub_ = accum::v1::Control::NewStub(connection->channel_);
  return connection;
}

bool Connection::wait_for_connection(std::chrono::system_clock::time_point deadline) {
  // GetState(true) starts connecting; a refused attempt leaves TRANSIENT_FAILURE, and gRPC
  // retries with its backoff. Poll in short waits so the deadline holds to the second.
  while (std::chrono::system_clock::now() < deadline) {
    const auto state = channel_->GetState(/*try_to_connect=*/true);
    if (state == GRPC_CHANNEL_READY) return true;
    const auto step =
        std::min(deadline, std::chrono::system_clock::now() + std::chrono::seconds(1));
    channel_->WaitForStateChange(state, step);
  }
  return channel_->GetState(false) == GRPC_CHANNEL_READY;
}

bool Connection::connected() const { return channel_->GetState(false) == GRPC_CHANNEL_READY; }

std::unique_ptr<grpc::ClientContext> Connection::context(int deadline_s) const {
  auto context = std::make_unique<grpc::ClientContext>();
  call_started_ = std::chrono::steady_clock::now();
  if (!token_.empty()) context->AddMetadata("authorization", "Bearer " + token_);
  if (deadline_s > 0) {
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(deadline_s));
  }
  return context;
}

bool Connection::unanswered(const grpc::Status& status) const {
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) return true;
  // gRPC's words for a wait that ran out ("connection attempt timed out before receiving
  // SETTINGS frame", "keepalive watchdog timeout"); not a refusal, a reset or a GOAWAY,
  // which are answers.
  const std::string message = absl::AsciiStrToLower(status.error_message());
  return status.error_code() == grpc::StatusCode::UNAVAILABLE && !connected() &&
         (absl::StrContains(message, "timed out") || absl::StrContains(message, "timeout") ||
          absl::StrContains(message, "deadline exceeded"));
}

int Connection::report(const grpc::Status& status, const std::string& what) const {
  const std::string& message = status.error_message();
  // What a plaintext call to a TLS accumd meets: it hangs up on the handshake.
  const bool tls_hang_up =
      options_.tls_ca.empty() && message.find("Socket closed") != std::string::npos;
  // A stopped or wedged accumd: the kernel still completes TCP handshakes on its port, and
  // gRPC gives up on the HTTP/2 one after 20 s (its minimum connect timeout) with the same
  // UNAVAILABLE as a refused connection. Only a connect of our own tells the two apart.
  if (unanswered(status) && !tls_hang_up &&
      probe_tcp(options_.server, std::chrono::seconds(3)) == TcpProbe::kAccepted) {
    std::cerr << "accumctl: " << what << ": accumd at " << options_.server
              << " accepted the connection but ";
    if (message.find("keepalive") != std::string::npos) {
      std::cerr << "stopped answering (no reply to a keepalive ping within "
                << options_.keepalive_timeout_s << " s)";
    } else {
      const auto waited = std::chrono::duration_cast<std::chrono::seconds>(
          std::chrono::steady_clock::now() - call_started_);
      std::cerr << "did not answer within " << waited.count() << " s";
    }
    std::cerr << ": it may be stopped (SIGSTOP) or overloaded (" << message << ")\n";
    return kUnreachable;
  }
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      std::cerr << "accumctl: cannot reach accumd at " << options_.server << " (" << message
                << "); is it running? (--server HOST:PORT)"
                << (tls_hang_up ? "; if it serves TLS, pass --tls-ca FILE" : "") << "\n";
      return kUnreachable;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      std::cerr << "accumctl: " << what << ": accumd at " << options_.server
                << " did not answer in time\n";
      return kUnreachable;
    case grpc::StatusCode::UNAUTHENTICATED:
      std::cerr << "accumctl: accumd refused the credentials: " << message
                << (token_.empty() ? " (no --token-file given)" : " (check --token-file)") << "\n";
      return kUnauthenticated;
    case grpc::StatusCode::INVALID_ARGUMENT:
      std::cerr << "accumctl: " << what << ": invalid: " << message << "\n";
      return kInvalidArgument;
    case grpc::StatusCode::NOT_FOUND:
      std::cerr << "accumctl: " << what << ": " << message << "\n";
      return kNotFound;
    case grpc::StatusCode::FAILED_PRECONDITION:
      std::cerr << "accumctl: " << what << ": " << message << "\n";
      return kFailedPrecondition;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      std::cerr << "accumctl: " << what << ": " << message << "\n";
      return kResourceExhausted;
    default:
      std::cerr << "accumctl: " << what << ": " << message << " (gRPC code "
                << static_cast<int>(status.error_code()) << ")\n";
      return kOtherError;
  }
}

}  // namespace accum::ctl
