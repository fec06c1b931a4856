// bench/daemon/getjob_load.cpp — the GetJob client threads.
#include "bench/daemon/getjob_load.h"

#include "absl/strings/str_cat.h"

namespace accum::bench {

using SteadyClock = std::chrono::steady_clock;

GetJobLoad::~GetJobLoad() {
  if (!threads_.empty()) (void)stop();
}

void GetJobLoad::start(const std::string& job_id) {
  logs_.assign(options_.clients, ClientLog{});
  ready_ = 0;
  go_ = false;
  stop_ = false;
  for (int i = 0; i < options_.clients; ++i) {
    threads_.emplace_back([this, i, job_id] { client_loop(i, job_id); });
  }
  while (ready_.load() < options_.clients)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  started_ = SteadyClock::now();
  go_ = true;
}

LoadResult GetJobLoad::stop() {
  stop_ = true;
  go_ = true;  // release clients still waiting at the start line
  for (auto& thread : threads_) thread.join();
  threads_.clear();
  LoadResult result;
  result.seconds = std::chrono::duration<double>(SteadyClock::now() - started_).count();
  std::vector<double> all;
  for (auto& log : logs_) {
    all.insert(all.end(), log.latencies_us.begin(), log.latencies_us.end());
    result.errors += log.errors;
    if (result.first_error.empty()) result.first_error = log.first_error;
  }
  result.latency = summarize_latencies(&all);
  result.requests_per_s = result.seconds > 0 ? result.latency.count / result.seconds : 0;
  result.samples_us = std::move(all);
  return result;
}

void GetJobLoad::client_loop(int index, const std::string& job_id) {
  ClientLog& log = logs_[index];
  log.latencies_us.reserve(1 << 16);
  auto channel =
      options_.shared_channel ? connection_->shared_channel() : connection_->private_channel();
  auto stub = accum::v1::Control::NewStub(channel);
  accum::v1::GetJobRequest request;
  request.set_id(job_id);
  accum::v1::JobStatus reply;
  {  // Connects (not counted).
    auto context = connection_->context(options_.rpc_deadline);
    (void)stub->GetJob(context.get(), request, &reply);
  }
  ready_.fetch_add(1);
  while (!go_.load()) std::this_thread::sleep_for(std::chrono::microseconds(200));

  const bool paced = options_.rate_per_client_hz > 0;
  const auto interval = paced
                            ? std::chrono::duration_cast<SteadyClock::duration>(
                                  std::chrono::duration<double>(1.0 / options_.rate_per_client_hz))
                            : SteadyClock::duration::zero();
  // Spread paced clients over one interval so they do not fire in lockstep.
  auto next_send = SteadyClock::now() + interval * index / std::max(1, options_.clients);
  while (!stop_.load(std::memory_order_relaxed)) {
    if (paced) {
      std::this_thread::sleep_until(next_send);
      if (stop_.load(std::memory_order_relaxed)) break;
      next_send = std::max(next_send + interval, SteadyClock::now());
    }
    auto context = connection_->context(options_.rpc_deadline);
    const auto sent = SteadyClock::now();
    const grpc::Status status = stub->GetJob(context.get(), request, &reply);
    const auto received = SteadyClock::now();
    if (status.ok()) {
      log.latencies_us.push_back(
          std::chrono::duration<double, std::micro>(received - sent).count());
    } else {
      ++log.errors;
      if (log.first_error.empty()) {
        log.first_error = absl::StrCat("code ", status.error_code(), ": ", status.error_message());
      }
    }
  }
}

}  // namespace accum::bench
