// bench/daemon/getjob_load.h — N client threads calling GetJob on one job.
//
// Closed loop (rate 0): each client sends its next GetJob as soon as the last
// one returns, so the offered load is whatever the daemon and this machine can
// sustain (saturation). Paced (rate > 0 Hz per client): each client sends on
// a fixed schedule, like dashboards polling a job; a client that falls behind
// sends at once without trying to catch up. Latency is measured per call
// (send to reply) on the steady clock; each client's first call (which opens
// its connection) happens before the measurement starts and is not counted.
//
// Thread safety: start() and stop() from one controlling thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "bench/daemon/bench_connection.h"
#include "bench/daemon/latency_stats.h"

namespace accum::bench {

struct LoadOptions {
  int clients = 64;
  bool shared_channel = false;    // false: one channel (TCP connection) per client
  double rate_per_client_hz = 0;  // 0: closed loop
  std::chrono::milliseconds rpc_deadline{10000};
};

struct LoadResult {
  LatencySummary latency;
  int64_t errors = 0;
  std::string first_error;
  double seconds = 0;
  double requests_per_s = 0;
  std::vector<double> samples_us;  // every counted call's latency, sorted
};

class GetJobLoad {
 public:
  // `connection` must outlive this object.
  GetJobLoad(const BenchConnection* connection, LoadOptions options)
      : connection_(connection), options_(options) {}
  ~GetJobLoad();
  GetJobLoad(const GetJobLoad&) = delete;
  GetJobLoad& operator=(const GetJobLoad&) = delete;

  // Starts the clients on `job_id` and returns once every client has made its
  // first (uncounted) call, i.e. when the measured load begins.
  void start(const std::string& job_id);
  // Stops the clients, joins them and summarizes every counted call.
  LoadResult stop();

 private:
  struct ClientLog {
    std::vector<double> latencies_us;
    int64_t errors = 0;
    std::string first_error;
  };
  void client_loop(int index, const std::string& job_id);

  const BenchConnection* connection_;
  LoadOptions options_;
  std::vector<std::thread> threads_;
  std::vector<ClientLog> logs_;
  std::atomic<int> ready_{0};
  std::atomic<bool> go_{false};
  std::atomic<bool> stop_{false};
  std::chrono::steady_clock::time_point started_;
};

}  // namespace accum::bench
