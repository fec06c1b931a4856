// control/metrics_http.cpp — sockets, request line parsing, responses.
#include "daemon/control/metrics_http.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "spdlog/spdlog.h"

namespace accum::control {
namespace {

constexpr size_t kMaxRequestHead = 8192;
using Clock = std::chrono::steady_clock;

// Waits until `fd` is ready for `events` (or has an error the next recv/send reports):
// false once `deadline` has passed.
bool wait_ready(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd ready{fd, events, 0};
    const int rc = ::poll(&ready, 1, static_cast<int>(left));
    if (rc > 0) return true;
    if (rc == 0 || errno != EINTR) return false;
  }
}

// Sends `data` on the non-blocking `fd` until it is all sent, the client goes away or
// `deadline` passes.
void send_all(int fd, const std::string& data, Clock::time_point deadline) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_ready(fd, POLLOUT, deadline)) return;  // a client that does not read
    } else {
      return;  // the client went away: nothing more to do
    }
  }
}

std::string response(const std::string& status, const std::string& content_type,
                     const std::string& body, const std::string& extra_headers = "") {
  return absl::StrCat("HTTP/1.0 ", status, "\r\nContent-Type: ", content_type,
                      "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n",
                      extra_headers, "\r\n", body);
}

// Splits "HOST:PORT", "[V6]:PORT" or "PORT" into host and port.
absl::StatusOr<std::pair<std::string, std::string>> split_listen(const std::string& listen) {
  int port = 0;
  if (absl::SimpleAtoi(listen, &port)) return std::make_pair(std::string("127.0.0.1"), listen);
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metrics-listen '", listen, "': expected HOST:PORT (port 0..65535) or PORT"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  return std::make_pair(host, listen.substr(colon + 1));
}

}  // namespace

absl::StatusOr<std::string> MetricsHttpServer::start(const std::string& listen) {
  auto parts = split_listen(listen);
  if (!parts.ok()) return parts.status();
  const auto& [host, port] = *parts;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &found);
      rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-listen '", listen, "': cannot resolve host: ", gai_strerror(rc)));
  }
  std::string last_error = "no address";
  for (addrinfo* address = found; address && listen_fd_ < 0; address = address->ai_next) {
    const int fd =
        ::socket(address->ai_family, address->ai_socktype | SOCK_CLOEXEC, address->ai_protocol);
    if (fd < 0) continue;
    const int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (::bind(fd, address->ai_addr, address->ai_addrlen) == 0 && ::listen(fd, 16) == 0) {
      listen_fd_ = fd;
    } else {
      last_error = std::strerror(errno);
      ::close(fd);
    }
  }
  freeaddrinfo(found);
  if (listen_fd_ < 0) {
    return absl::UnavailableError(
        absl::StrCat("--metrics-listen '", listen, "': cannot listen: ", last_error));
  }
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &length);
  char text[INET6_ADDRSTRLEN] = {};
  int bound_port = 0;
  std::string bound_host;
  if (bound.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&bound);
    inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
    bound_host = absl::StrCat("[", text, "]");
    bound_port = ntohs(v6->sin6_port);
  } else {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&bound);
    inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
    bound_host = text;
    bound_port = ntohs(v4->sin_port);
  }
  thread_ = std::thread([this] { serve_loop(); });
  return absl::StrCat(bound_host, ":", bound_port);
}

void MetricsHttpServer::stop() {
  if (stopping_.exchange(true)) return;
  if (thread_.joinable()) thread_.join();
  // Each connection ends within its deadlines (and one render).
  std::unique_lock lock(mutex_);
  idle_.wait(lock, [this] { return open_connections_ == 0; });
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
}

void MetricsHttpServer::serve_loop() {
  while (!stopping_.load()) {
    pollfd waiting{listen_fd_, POLLIN, 0};
    if (::poll(&waiting, 1, 200) <= 0) continue;  // timeout (check stopping_) or EINTR
    const int connection = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (connection < 0) continue;
    {
      std::lock_guard lock(mutex_);
      if (open_connections_ >= kMaxConnections) {
        // Busy with slow clients: say so at once rather than queue behind them.
        const auto now = Clock::now();
        send_all(
            connection,
            response("503 Service Unavailable", "text/plain",
                     "too many open connections to the metrics endpoint\n", "Retry-After: 1\r\n"),
            now);
        ::close(connection);
        continue;
      }
      ++open_connections_;
    }
    std::thread([this, connection] {
      answer(connection);
      ::close(connection);
      std::lock_guard lock(mutex_);
      if (--open_connections_ == 0) idle_.notify_all();
    }).detach();
  }
}

void MetricsHttpServer::answer(int connection) {
  // The whole request head within kIoTimeout, however slowly its bytes come, so a client
  // that trickles them cannot hold a connection (one of kMaxConnections) for long.
  const auto read_deadline = Clock::now() + kIoTimeout;
  std::string head;
  char buffer[1024];
  bool timed_out = false;
  while (head.size() < kMaxRequestHead && head.find("\r\n\r\n") == std::string::npos &&
         head.find("\n\n") == std::string::npos) {
    const ssize_t n = ::recv(connection, buffer, sizeof(buffer), 0);
    if (n > 0) {
      head.append(buffer, static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_ready(connection, POLLIN, read_deadline)) {
        timed_out = true;
        break;
      }
    } else {
      break;
    }
  }
  const auto reply = [connection](const std::string& text) {
    send_all(connection, text, Clock::now() + kIoTimeout);
  };
  if (timed_out) {
    reply(response(
        "408 Request Timeout", "text/plain",
        absl::StrCat("the request head did not arrive within ", kIoTimeout.count(), " s\n")));
    return;
  }
  const std::string request_line = head.substr(0, head.find_first_of("\r\n"));
  const std::vector<std::string> parts = absl::StrSplit(request_line, ' ', absl::SkipEmpty());
  if (parts.size() != 3 || parts[2].rfind("HTTP/", 0) != 0) {
    reply(response("400 Bad Request", "text/plain", "expected 'GET /metrics HTTP/1.x'\n"));
    return;
  }
  const std::string path = parts[1].substr(0, parts[1].find('?'));
  if (parts[0] != "GET") {
    reply(
        response("405 Method Not Allowed", "text/plain", "only GET is served\n", "Allow: GET\r\n"));
    return;
  }
  if (path != "/metrics") {
    reply(response("404 Not Found", "text/plain", "not found; metrics are at /metrics\n"));
    return;
  }
  auto body = render_();
  if (!body.ok()) {
    spdlog::error("metrics: {}", std::string(body.status().message()));
    reply(response("500 Internal Server Error", "text/plain",
                   absl::StrCat(body.status().message(), "\n")));
    return;
  }
  reply(response("200 OK", "text/plain; version=0.0.4; charset=utf-8", *body));
}

}  // namespace accum::control
