// control/metrics_http.h — a tiny HTTP/1.0 responder for Prometheus scrapes.
//
// One thread accepts connections and hands each to a thread of its own, at most
// kMaxConnections at once (scrapes come every few seconds; a gRPC-sized server would
// be out of proportion); beyond that a connection is answered 503 at once. Each reads
// the request head (at most 8 KiB, all of it within 2 s), answers (within 2 s more)
// and closes, so a slow or silent client never stalls another's scrape:
//   GET /metrics            200, text/plain; version=0.0.4, body from render()
//                           (500 when render() fails)
//   another path            404
//   another method          405 (Allow: GET)
//   no parsable request line 400
//   no complete head in 2 s 408
// Sockets are close-on-exec so launched workers do not inherit them.
//
// Thread safety: start() once; stop() (or the destructor) from any one thread; it
// returns once every connection has been answered. `render` may run on several
// connections' threads at once.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace accum::control {

class MetricsHttpServer {
 public:
  // `render` is called on a connection's thread for every GET /metrics; an error
  // becomes a 500 carrying its message.
  using Render = std::function<absl::StatusOr<std::string>()>;
  explicit MetricsHttpServer(Render render) : render_(std::move(render)) {}
  ~MetricsHttpServer() { stop(); }
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // Binds HOST:PORT ("[::1]:9100" for IPv6; port 0 picks a free one; a bare
  // PORT means 127.0.0.1:PORT) and starts serving. Returns the bound HOST:PORT.
  absl::StatusOr<std::string> start(const std::string& listen);
  void stop();

 private:
  void serve_loop();
  void answer(int connection);

  static constexpr int kMaxConnections = 8;
  static constexpr std::chrono::seconds kIoTimeout{2};

  Render render_;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread thread_;  // accepts
  std::mutex mutex_;
  std::condition_variable idle_;  // open_connections_ reached 0
  int open_connections_ = 0;      // guarded by mutex_
};

}  // namespace accum::control
