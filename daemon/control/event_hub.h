// control/event_hub.h — fan-out of job events (state changes, step metrics) to
// WatchJob subscribers.
//
// Each subscriber owns a bounded queue; a slow watcher loses its oldest metrics
// rather than slowing the trainer's link (status events are never dropped).
// Thread safety: all methods are thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "proto/accum.pb.h"

namespace accum::control {

class JobSubscription {
 public:
  // Waits up to `timeout` for the next event; nullopt on timeout or close().
  std::optional<accum::v1::JobEvent> next(std::chrono::milliseconds timeout);
  void push(const accum::v1::JobEvent& event);
  void close();
  bool closed();

 private:
  static constexpr size_t kMaxQueued = 10000;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<accum::v1::JobEvent> queue_;  // GUARDED_BY(mutex_)
  bool closed_ = false;                    // GUARDED_BY(mutex_)
};

class EventHub {
 public:
  // The caller keeps the returned subscription; unsubscribe() when done.
  std::shared_ptr<JobSubscription> subscribe(const std::string& job_id);
  void unsubscribe(const std::string& job_id, const std::shared_ptr<JobSubscription>& sub);
  void publish(const std::string& job_id, const accum::v1::JobEvent& event);
  void close_all();  // server shutdown: wakes every watcher

 private:
  std::mutex mutex_;
  std::multimap<std::string, std::shared_ptr<JobSubscription>> subscribers_;  // GUARDED_BY(mutex_)
};

}  // namespace accum::control
