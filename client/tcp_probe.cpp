// client/tcp_probe.cpp — a non-blocking connect() with a poll() timeout per resolved address.
#include "client/tcp_probe.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace accum::ctl {
namespace {

// Connects `fd` (made non-blocking) to `address`, waiting until `deadline`.
bool connect_within(int fd, const sockaddr* address, socklen_t length,
                    std::chrono::steady_clock::time_point deadline) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  if (::connect(fd, address, length) == 0) return true;
  if (errno != EINPROGRESS) return false;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd waiting{fd, POLLOUT, 0};
    const int ready = ::poll(&waiting, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return false;
    int error = 0;
    socklen_t size = sizeof(error);
    return ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) == 0 && error == 0;
  }
}

TcpProbe probe_unix(const std::string& path, std::chrono::steady_clock::time_point deadline) {
  sockaddr_un address{};
  if (path.size() >= sizeof(address.sun_path)) return TcpProbe::kNotProbeable;
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return TcpProbe::kNotProbeable;
  const bool accepted =
      connect_within(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address), deadline);
  ::close(fd);
  return accepted ? TcpProbe::kAccepted : TcpProbe::kNotAccepted;
}

}  // namespace

TcpProbe probe_tcp(const std::string& server, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string target = server;
  if (target.rfind("unix:", 0) == 0) return probe_unix(target.substr(5), deadline);
  for (const char* scheme : {"dns:///", "dns:", "ipv4:", "ipv6:"}) {
    if (target.rfind(scheme, 0) == 0) {
      target = target.substr(std::strlen(scheme));
      break;
    }
  }
  if (target.find(',') != std::string::npos) return TcpProbe::kNotProbeable;  // an address list
  const size_t colon = target.rfind(':');
  if (colon == std::string::npos) return TcpProbe::kNotProbeable;
  std::string host = target.substr(0, colon);
  const std::string port = target.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addresses = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &addresses) != 0) {
    return TcpProbe::kNotAccepted;
  }
  TcpProbe result = TcpProbe::kNotAccepted;
  for (const addrinfo* address = addresses; address; address = address->ai_next) {
    const int fd =
        ::socket(address->ai_family, address->ai_socktype | SOCK_CLOEXEC, address->ai_protocol);
    if (fd < 0) continue;
    const bool accepted = connect_within(fd, address->ai_addr, address->ai_addrlen, deadline);
    ::close(fd);
    if (accepted) {
      result = TcpProbe::kAccepted;
      break;
    }
  }
  ::freeaddrinfo(addresses);
  return result;
}

}  // namespace accum::ctl
