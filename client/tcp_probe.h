// client/tcp_probe.h — whether anything accepts a TCP connection at accumd's address.
//
// accumctl asks after a call failed without an answer, to tell "nothing listens there"
// (accumd is not running, a wrong --server) from "accumd's port accepts connections but
// accumd does not answer" (stopped with SIGSTOP, wedged, overloaded): the kernel completes
// the TCP handshake of a listening socket whether or not its process runs.
#pragma once

#include <chrono>
#include <string>

namespace accum::ctl {

enum class TcpProbe {
  kAccepted,      // a connection to the address was established (then closed)
  kNotAccepted,   // refused, unresolvable, unreachable, or no answer within the timeout
  kNotProbeable,  // an address form the probe does not know (it says nothing then)
};

// Connects to `server` (HOST:PORT, [V6]:PORT, dns:///HOST:PORT, ipv4:/ipv6:ADDR:PORT or
// unix:PATH, as gRPC takes them) and closes the connection at once; waits at most `timeout`.
TcpProbe probe_tcp(const std::string& server, std::chrono::milliseconds timeout);

}  // namespace accum::ctl
