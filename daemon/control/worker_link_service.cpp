// control/worker_link_service.cpp — one rank-0 connection.
#include "daemon/control/worker_link_service.h"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "daemon/control/control_service.h"
#include "spdlog/spdlog.h"

namespace accum::control {
namespace {

using Stream = grpc::ServerReaderWriter<accum::v1::WorkerCommand, accum::v1::WorkerEvent>;

// Queues commands and writes them from its own thread.
class StreamCommandSink final : public CommandSink {
 public:
  explicit StreamCommandSink(Stream* stream) : stream_(stream), writer_([this] { write_loop(); }) {}
  ~StreamCommandSink() override { stop(); }

  void send(const accum::v1::WorkerCommand& command) override {
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(command);
    }
    ready_.notify_one();
  }

  // REQUIRES: called before the stream is destroyed.
  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopped_ = true;
    }
    ready_.notify_one();
    if (writer_.joinable()) writer_.join();
  }

 private:
  void write_loop() {
    std::unique_lock lock(mutex_);
    while (true) {
      ready_.wait(lock, [&] { return stopped_ || !queue_.empty(); });
      if (stopped_) return;
      auto command = queue_.front();
      queue_.pop_front();
      lock.unlock();
      const bool written = stream_->Write(command);
      lock.lock();
      if (!written) return;
    }
  }

  Stream* stream_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<accum::v1::WorkerCommand> queue_;  // GUARDED_BY(mutex_)
  bool stopped_ = false;                        // GUARDED_BY(mutex_)
  std::thread writer_;
};

}  // namespace

grpc::Status WorkerLinkService::Connect(grpc::ServerContext* context, Stream* stream) {
  if (auto status = auth_->check(*context); !status.ok()) return status;
  accum::v1::WorkerEvent first;
  if (!stream->Read(&first)) return grpc::Status::OK;
  if (!first.has_hello()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "the first WorkerEvent must be a hello"};
  }
  const std::string job_id = first.hello().job_id();
  auto sink = std::make_shared<StreamCommandSink>(stream);
  auto session = manager_->worker_connected(first.hello(), sink);
  if (!session.ok()) {
    sink->stop();
    spdlog::warn("worker link for job '{}' refused: {}", job_id,
                 std::string(session.status().message()));
    return to_grpc(session.status());
  }
  accum::v1::WorkerEvent event;
  while (stream->Read(&event)) manager_->worker_event(job_id, *session, event);
  manager_->worker_disconnected(job_id, *session);
  sink->stop();
  return grpc::Status::OK;
}

}  // namespace accum::control
