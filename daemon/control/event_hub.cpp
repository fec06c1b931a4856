// control/event_hub.cpp — subscriber queues for WatchJob.
#include "daemon/control/event_hub.h"

namespace accum::control {

std::optional<accum::v1::JobEvent> JobSubscription::next(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  ready_.wait_for(lock, timeout, [&] { return closed_ || !queue_.empty(); });
  if (queue_.empty()) return std::nullopt;
  accum::v1::JobEvent event = std::move(queue_.front());
  queue_.pop_front();
  return event;
}

void JobSubscription::push(const accum::v1::JobEvent& event) {
  {
    std::lock_guard lock(mutex_);
    if (queue_.size() >= kMaxQueued) {
      // Drop the oldest metrics event; keep status changes.
      for (auto it = queue_.begin(); it != queue_.end(); ++it) {
        if (it->has_metrics()) {
          queue_.erase(it);
          break;
        }
      }
    }
    queue_.push_back(event);
  }
  ready_.notify_one();
}

void JobSubscription::close() {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  ready_.notify_all();
}

bool JobSubscription::closed() {
  std::lock_guard lock(mutex_);
  return closed_;
}

std::shared_ptr<JobSubscription> EventHub::subscribe(const std::string& job_id) {
  auto sub = std::make_shared<JobSubscription>();
  std::lock_guard lock(mutex_);
  subscribers_.emplace(job_id, sub);
  return sub;
}

void EventHub::unsubscribe(const std::string& job_id, const std::shared_ptr<JobSubscription>& sub) {
  std::lock_guard lock(mutex_);
  auto [begin, end] = subscribers_.equal_range(job_id);
  for (auto it = begin; it != end; ++it) {
    if (it->second == sub) {
      subscribers_.erase(it);
      return;
    }
  }
}

void EventHub::publish(const std::string& job_id, const accum::v1::JobEvent& event) {
  std::lock_guard lock(mutex_);
  auto [begin, end] = subscribers_.equal_range(job_id);
  for (auto it = begin; it != end; ++it) it->second->push(event);
}

void EventHub::close_all() {
  std::lock_guard lock(mutex_);
  for (auto& [id, sub] : subscribers_) sub->close();
}

}  // namespace accum::control
