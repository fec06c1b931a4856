// link/control_link.cpp — the gRPC ControlLink: one WorkerLink.Connect stream
// owned by a background thread, so the trainer never waits on the network.
//
// The trainer's calls only queue events (bounded: the oldest metrics are
// dropped first if the daemon is unreachable for long) and read a command
// queue. The background thread connects, sends the hello, drains the event
// queue, and reconnects with backoff (0.2 s doubling to 5 s) whenever the
// stream breaks — e.g. while accumd restarts. A second thread reads commands.
// Heartbeats come from the trainer (rate-limited here to one per second), so a
// trainer stuck in a collective stops heartbeating and the daemon notices.
#include "daemon/worker/link/control_link.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "grpcpp/grpcpp.h"
#include "proto/accum.grpc.pb.h"
#include "spdlog/spdlog.h"

namespace accum::link {
namespace {

using Clock = std::chrono::steady_clock;
using Stream = grpc::ClientReaderWriter<accum::v1::WorkerEvent, accum::v1::WorkerCommand>;

class NullControlLink final : public ControlLink {
 public:
  void hello(const accum::v1::WorkerHello&) override {}
  void report_metrics(const accum::v1::StepMetrics&) override {}
  void report_checkpoint(int64_t, const std::string&, uint64_t) override {}
  void heartbeat(int64_t, int) override {}
  Command poll_command() override { return {}; }
  void close() override {}
};

// The whole file, or "" when it cannot be read.
std::string read_file(const std::string& path) {
  std::ifstream file(path);
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value ? std::string(value) : fallback;
}

class GrpcControlLink final : public ControlLink {
 public:
  // tls_roots: PEM root certificates to verify a TLS daemon with; empty = plaintext.
  // link_key: ACCUM_LINK_KEY, the secret accumd gave this attempt ("" for none).
  GrpcControlLink(std::string addr, std::string job_id, std::string token, int attempt,
                  std::string link_key, const std::string& tls_roots)
      : addr_(std::move(addr)),
        job_id_(std::move(job_id)),
        token_(std::move(token)),
        link_key_(std::move(link_key)) {
    hello_.set_job_id(job_id_);
    hello_.set_attempt(attempt);
    hello_.set_link_key(link_key_);
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
    if (!tls_roots.empty()) {
      grpc::SslCredentialsOptions ssl;
      ssl.pem_root_certs = tls_roots;
      credentials = grpc::SslCredentials(ssl);
    }
    channel_ = grpc::CreateCustomChannel(addr_, credentials, args);
    stub_ = accum::v1::WorkerLink::NewStub(channel_);
    worker_ = std::thread([this] { run(); });
  }

  ~GrpcControlLink() override { close(); }

  void hello(const accum::v1::WorkerHello& hello) override {
    std::lock_guard lock(mutex_);
    const int attempt = hello_.attempt();
    hello_ = hello;
    hello_.set_job_id(job_id_);
    hello_.set_link_key(link_key_);
    if (hello_.attempt() == 0) hello_.set_attempt(attempt);  // the launcher's ACCUM_ATTEMPT
    have_hello_ = true;
    wake_.notify_all();
  }

  void report_metrics(const accum::v1::StepMetrics& metrics) override {
    accum::v1::WorkerEvent event;
    *event.mutable_metrics() = metrics;
    enqueue(std::move(event));
  }

  void report_checkpoint(int64_t step, const std::string& path, uint64_t request_id) override {
    accum::v1::WorkerEvent event;
    auto* done = event.mutable_checkpoint_done();
    done->set_step(step);
    done->set_path(path);
    done->set_request_id(request_id);
    enqueue(std::move(event));
  }

  void heartbeat(int64_t step, int micro_step) override {
    const auto now = Clock::now();
    {
      std::lock_guard lock(mutex_);
      if (now - last_heartbeat_ < std::chrono::seconds(1)) return;
      last_heartbeat_ = now;
    }
    accum::v1::WorkerEvent event;
    event.mutable_heartbeat()->set_step(step);
    event.mutable_heartbeat()->set_micro_step(micro_step);
    enqueue(std::move(event));
  }

  Command poll_command() override {
    std::lock_guard lock(mutex_);
    if (commands_.empty()) return {};
    Command command = commands_.front();
    commands_.pop_front();
    return command;
  }

  void close() override {
    {
      std::unique_lock lock(mutex_);
      if (closing_) return;
      // Everything close() waits for shares one bound: an accumd that stopped reading holds
      // an exiting worker kCloseTimeout at most (it was the drain's 3 s, then the goodbye's
      // 6 s).
      const auto now = std::chrono::steady_clock::now();
      const auto deadline = now + kCloseTimeout;
      // Give the stream a bounded chance to deliver the last events.
      wake_.notify_all();
      drained_.wait_until(lock, std::min(deadline, now + kDrainTimeout),
                          [&] { return outbox_.empty(); });
      closing_ = true;
      wake_.notify_all();
      // A connected stream ends itself: stream_once half-closes it and waits (bounded) for
      // accumd to read the rest. Anything else (a connection accumd never answers) is
      // cancelled at once, as is a goodbye that outlasts the bound.
      if (streaming_) stopped_.wait_until(lock, deadline, [&] { return !streaming_; });
      if (context_) context_->TryCancel();
    }
    if (worker_.joinable()) worker_.join();
  }

 private:
  static constexpr size_t kMaxQueued = 10000;
  // How long a stream that is ending waits for accumd to read the rest of it.
  static constexpr std::chrono::seconds kGoodbyeTimeout{5};
  // close(): how long it waits for the queued events to be written (with no accumd to take
  // them they never are), and how long it waits in all.
  static constexpr std::chrono::seconds kDrainTimeout{3};
  static constexpr std::chrono::seconds kCloseTimeout{5};

  void enqueue(accum::v1::WorkerEvent event) {
    std::lock_guard lock(mutex_);
    if (outbox_.size() >= kMaxQueued) {
      for (auto it = outbox_.begin(); it != outbox_.end(); ++it) {
        if (!it->has_checkpoint_done()) {
          outbox_.erase(it);
          break;
        }
      }
    }
    outbox_.push_back(std::move(event));
    wake_.notify_all();
  }

  // Background thread: connect, stream, reconnect.
  void run() {
    auto backoff = std::chrono::milliseconds(200);
    while (true) {
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return closing_ || have_hello_; });
        if (closing_) return;
      }
      if (stream_once()) backoff = std::chrono::milliseconds(200);
      std::unique_lock lock(mutex_);
      if (closing_) return;
      wake_.wait_for(lock, backoff, [&] { return closing_; });
      if (closing_) return;
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
    }
  }

  // One connection's life. Returns true when it got as far as sending the hello.
  bool stream_once() {
    auto context = std::make_shared<grpc::ClientContext>();
    if (!token_.empty()) context->AddMetadata("authorization", "Bearer " + token_);
    // Wait for accumd instead of failing at once while the channel is between connection
    // attempts: a restarted accumd hears from its workers as soon as it listens (the
    // channel retries every 0.2-2 s), so their queued metrics arrive while they still run.
    // close() cancels the wait.
    context->set_wait_for_ready(true);
    accum::v1::WorkerEvent hello_event;
    {
      std::lock_guard lock(mutex_);
      if (closing_) return false;
      context_ = context;
      *hello_event.mutable_hello() = hello_;
    }
    std::unique_ptr<Stream> stream = stub_->Connect(context.get());
    bool connected = stream->Write(hello_event);
    std::atomic<bool> reader_done{false};
    std::thread reader;
    if (connected) {
      {
        std::lock_guard lock(mutex_);
        streaming_ = true;
      }
      spdlog::debug("control link: connected to {}", addr_);
      reader = std::thread([&] {
        accum::v1::WorkerCommand command;
        while (stream->Read(&command)) {
          std::lock_guard lock(mutex_);
          commands_.push_back({command.kind(), command.request_id()});
        }
        reader_done = true;
        std::lock_guard lock(mutex_);
        wake_.notify_all();
      });
    }
    while (connected && !reader_done) {
      accum::v1::WorkerEvent event;
      {
        std::unique_lock lock(mutex_);
        wake_.wait_for(lock, std::chrono::milliseconds(500),
                       [&] { return closing_ || reader_done || !outbox_.empty(); });
        if (closing_ || reader_done) break;
        if (outbox_.empty()) continue;
        event = outbox_.front();
      }
      if (!stream->Write(event)) break;
      std::lock_guard lock(mutex_);
      if (!outbox_.empty()) outbox_.pop_front();  // only this thread pops
      if (outbox_.empty()) drained_.notify_all();
    }
    stream->WritesDone();
    // accumd handles each event it reads, and ends the call once it reads the end of the
    // stream: wait for that before cancelling (bounded, accumd may be gone). A cancel right
    // after WritesDone drops the events accumd has not read yet, such as the last step's
    // metrics of a worker that is exiting while accumd is busy.
    if (connected) {
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, kGoodbyeTimeout, [&] { return reader_done.load(); });
    }
    context->TryCancel();
    if (reader.joinable()) reader.join();
    const grpc::Status status = stream->Finish();
    {
      std::lock_guard lock(mutex_);
      context_.reset();
      streaming_ = false;
      stopped_.notify_all();
    }
    if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED) {
      spdlog::warn("control link to {}: {} (will retry)", addr_, status.error_message());
    }
    return connected;
  }

  const std::string addr_;
  const std::string job_id_;
  const std::string token_;
  const std::string link_key_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<accum::v1::WorkerLink::Stub> stub_;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable drained_;
  accum::v1::WorkerHello hello_;                  // GUARDED_BY(mutex_)
  bool have_hello_ = false;                       // GUARDED_BY(mutex_)
  std::deque<accum::v1::WorkerEvent> outbox_;     // GUARDED_BY(mutex_)
  std::deque<Command> commands_;                  // GUARDED_BY(mutex_)
  Clock::time_point last_heartbeat_{};            // GUARDED_BY(mutex_)
  std::shared_ptr<grpc::ClientContext> context_;  // GUARDED_BY(mutex_)
  bool closing_ = false;                          // GUARDED_BY(mutex_)
  bool streaming_ = false;           // a stream got its hello through; GUARDED_BY(mutex_)
  std::condition_variable stopped_;  // streaming_ became false
  std::thread worker_;
};

}  // namespace

std::unique_ptr<ControlLink> make_null_link() { return std::make_unique<NullControlLink>(); }

std::unique_ptr<ControlLink> make_link_from_env() {
  const std::string addr = env_or("ACCUM_CONTROL_ADDR", "");
  if (addr.empty()) return make_null_link();
  // Only rank 0 talks to the daemon; under mpirun every rank sees the variables.
  for (const char* rank_var : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"}) {
    if (env_or(rank_var, "0") != "0") return make_null_link();
  }
  std::string token;
  if (const std::string token_file = env_or("ACCUM_TOKEN_FILE", ""); !token_file.empty()) {
    token = read_file(token_file);
    const auto first = token.find_first_not_of(" \t\r\n");
    const auto last = token.find_last_not_of(" \t\r\n");
    token = first == std::string::npos ? "" : token.substr(first, last - first + 1);
    if (token.empty())
      spdlog::warn("control link: token file {} is empty or unreadable", token_file);
  }
  // A daemon serving TLS names the CA to verify it with (its own certificate by default).
  std::string tls_roots;
  if (const std::string ca_file = env_or("ACCUM_CONTROL_TLS_CA", ""); !ca_file.empty()) {
    tls_roots = read_file(ca_file);
    if (tls_roots.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
      throw std::runtime_error("ACCUM_CONTROL_TLS_CA: '" + ca_file +
                               "' is not a readable PEM certificate (expected the CA that "
                               "signed accumd's --tls-cert)");
    }
  }
  const int attempt = std::atoi(env_or("ACCUM_ATTEMPT", "0").c_str());
  return std::make_unique<GrpcControlLink>(addr, env_or("ACCUM_JOB_ID", ""), token, attempt,
                                           env_or("ACCUM_LINK_KEY", ""), tls_roots);
}

}  // namespace accum::link
