// The worker's control link (daemon/worker/link) against a real gRPC server on loopback that
// reads slowly, as a busy accumd does: every event reported before close() arrives, in order.
// close() used to cancel the stream right after its last write, which dropped the events the
// server had not read yet (the last step's metrics of an exiting worker).
#include "daemon/worker/link/control_link.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "proto/accum.grpc.pb.h"

namespace accum::testing {
namespace {

// A WorkerLink service that takes 50 ms over each event it reads.
class SlowWorkerLink final : public accum::v1::WorkerLink::Service {
 public:
  grpc::Status Connect(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<accum::v1::WorkerCommand, accum::v1::WorkerEvent>* stream) override {
    accum::v1::WorkerEvent event;
    while (stream->Read(&event)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      std::lock_guard lock(mutex_);
      if (event.has_hello()) ++hellos_;
      if (event.has_metrics()) steps_.push_back(event.metrics().step());
    }
    return grpc::Status::OK;
  }
  std::vector<int64_t> steps() {
    std::lock_guard lock(mutex_);
    return steps_;
  }
  int hellos() {
    std::lock_guard lock(mutex_);
    return hellos_;
  }

 private:
  std::mutex mutex_;
  std::vector<int64_t> steps_;
  int hellos_ = 0;
};

// A WorkerLink service that reads the hello and then nothing more, without ending the call
// (a hung accumd): the worker's writes stop once gRPC's flow-control window is full. It
// returns when the worker cancels the call.
class StalledWorkerLink final : public accum::v1::WorkerLink::Service {
 public:
  grpc::Status Connect(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<accum::v1::WorkerCommand, accum::v1::WorkerEvent>* stream) override {
    accum::v1::WorkerEvent hello;
    stream->Read(&hello);
    while (!context->IsCancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return grpc::Status::CANCELLED;
  }
};

// A loopback port that was free a moment ago and has no listener now (0 on failure).
int closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  ::close(fd);
  return port;
}

// The link accum-worker makes from the launcher's variables, to accumd at 127.0.0.1:`port`.
std::unique_ptr<link::ControlLink> link_to(int port) {
  setenv("ACCUM_CONTROL_ADDR", ("127.0.0.1:" + std::to_string(port)).c_str(), 1);
  setenv("ACCUM_JOB_ID", "job-link-test", 1);
  std::unique_ptr<link::ControlLink> link = link::make_link_from_env();
  unsetenv("ACCUM_CONTROL_ADDR");
  unsetenv("ACCUM_JOB_ID");
  return link;
}

// A real gRPC server on a loopback port running `service` (null, and port 0, on failure).
std::unique_ptr<grpc::Server> serve(grpc::Service* service, int* port) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), port);
  builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  return server != nullptr && *port > 0 ? std::move(server) : nullptr;
}

TEST(ControlLinkTest, CloseDeliversEveryReportedEventToASlowDaemon) {
  SlowWorkerLink service;
  int port = 0;
  std::unique_ptr<grpc::Server> server = serve(&service, &port);
  ASSERT_TRUE(server != nullptr);

  std::unique_ptr<link::ControlLink> link = link_to(port);
  accum::v1::WorkerHello hello;
  hello.set_world_size(1);
  link->hello(hello);
  constexpr int kSteps = 20;  // 1 s of the server's reading: far more than a cancel waits
  for (int step = 1; step <= kSteps; ++step) {
    accum::v1::StepMetrics metrics;
    metrics.set_step(step);
    link->report_metrics(metrics);
  }
  link->close();

  const std::vector<int64_t> steps = service.steps();
  ASSERT_EQ(steps.size(), size_t(kSteps)) << "events lost when the link closed";
  for (int i = 0; i < kSteps; ++i) EXPECT_EQ(steps[i], i + 1);
  EXPECT_EQ(service.hellos(), 1);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

// With no daemon listening, close() gives up after its bounded wait for the events to drain
// (3 s) instead of waiting for a goodbye that cannot come: a worker whose accumd died still
// exits.
TEST(ControlLinkTest, CloseReturnsWhenNoDaemonListens) {
  const int port = closed_port();
  ASSERT_GT(port, 0);
  std::unique_ptr<link::ControlLink> link = link_to(port);
  link->hello(accum::v1::WorkerHello());
  accum::v1::StepMetrics metrics;
  metrics.set_step(1);
  link->report_metrics(metrics);
  const auto started = std::chrono::steady_clock::now();
  link->close();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_LT(seconds, 6.0) << "close() waited for a daemon that is not there";
}

// An accumd that stops reading (hung, not dead: the connection stays up) holds a closing
// worker for one bounded wait in all, kCloseTimeout (5 s), not for the wait for the events to
// drain (3 s) and then the wait for the goodbye (6 s) one after the other, 9 s.
TEST(ControlLinkTest, CloseReturnsWithinItsBoundWhenTheDaemonStopsReading) {
  StalledWorkerLink service;
  int port = 0;
  std::unique_ptr<grpc::Server> server = serve(&service, &port);
  ASSERT_TRUE(server != nullptr);

  std::unique_ptr<link::ControlLink> link = link_to(port);
  link->hello(accum::v1::WorkerHello());
  // 24 MB of events, far more than gRPC's flow-control window and the sockets' buffers hold:
  // the link's writer blocks, and the events cannot drain.
  const std::string path(8000, 'x');
  for (int step = 1; step <= 3000; ++step) link->report_checkpoint(step, path, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the writer fills the window
  const auto started = std::chrono::steady_clock::now();
  link->close();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_LT(seconds, 6.5) << "close() waited for its drain and its goodbye one after the other";
  EXPECT_GT(seconds, 2.5) << "close() gave up at once: a slow daemon would lose events";
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

}  // namespace
}  // namespace accum::testing
