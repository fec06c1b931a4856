// tests/daemon/e2e_metrics_test.cpp — accumd's Prometheus endpoint, scraped
// over a real TCP socket from a real accumd while a real job trains.
//
// The scraped values are checked against what the same daemon says on gRPC
// (GetJob before and after the scrape bracket the step) and against the job's
// own metrics.jsonl (the loss and tokens/s of the scraped step); RPC counters
// are checked by exact deltas around calls this test makes.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "daemon/control/prometheus.h"
#include "daemon/control/rpc_stats.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/daemon/daemon_harness.h"

namespace accum::testing {
namespace {

struct HttpReply {
  std::string status_line;
  std::string head;
  std::string body;
};

// A TCP connection to HOST:PORT (IPv4), or -1 (a test failure).
int connect_to(const std::string& address) {
  const size_t colon = address.rfind(':');
  sockaddr_in target{};
  target.sin_family = AF_INET;
  target.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  EXPECT_EQ(inet_pton(AF_INET, address.substr(0, colon).c_str(), &target.sin_addr), 1) << address;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(fd, reinterpret_cast<sockaddr*>(&target), sizeof(target)) != 0) {
    ADD_FAILURE() << "cannot connect to the metrics endpoint " << address << ": "
                  << strerror(errno);
    close(fd);
    return -1;
  }
  return fd;
}

// Everything the server sends on `fd` until it closes.
std::string read_to_end(int fd) {
  std::string raw;
  char buffer[4096];
  for (ssize_t n; (n = recv(fd, buffer, sizeof(buffer), 0)) > 0;) raw.append(buffer, n);
  return raw;
}

// Sends `request` verbatim to HOST:PORT (IPv4) and reads until the server closes.
HttpReply http_exchange(const std::string& address, const std::string& request) {
  HttpReply reply;
  const int fd = connect_to(address);
  if (fd < 0) return reply;
  send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  const std::string raw = read_to_end(fd);
  close(fd);
  const size_t blank = raw.find("\r\n\r\n");
  reply.head = raw.substr(0, blank);
  reply.status_line = raw.substr(0, raw.find("\r\n"));
  if (blank != std::string::npos) reply.body = raw.substr(blank + 4);
  return reply;
}

// series text ("name{labels}" exactly as exposed) -> value.
std::map<std::string, double> scrape(const std::string& address) {
  const HttpReply reply = http_exchange(address, "GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n");
  EXPECT_EQ(reply.status_line, "HTTP/1.0 200 OK");
  EXPECT_NE(reply.head.find("Content-Type: text/plain; version=0.0.4"), std::string::npos)
      << reply.head;
  EXPECT_NE(reply.head.find(absl::StrCat("Content-Length: ", reply.body.size())), std::string::npos)
      << reply.head;
  std::map<std::string, double> series;
  std::istringstream lines(reply.body);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    double value = 0;
    EXPECT_TRUE(absl::SimpleAtod(line.substr(space + 1), &value)) << "unparsable sample: " << line;
    EXPECT_TRUE(series.emplace(line.substr(0, space), value).second)
        << "duplicate series: " << line;
  }
  return series;
}

double value_of(const std::map<std::string, double>& series, const std::string& key) {
  const auto it = series.find(key);
  if (it == series.end()) {
    ADD_FAILURE() << "no series " << key;
    return std::nan("");
  }
  return it->second;
}

std::string job_series(const std::string& metric, const std::string& id, const std::string& name,
                       const std::string& extra = "") {
  return absl::StrCat(metric, "{job_id=\"", id, "\",name=\"", name, "\"", extra, "}");
}

std::string rpc_series(const std::string& method, const std::string& code) {
  return absl::StrCat("accumd_rpcs_total{method=\"/accum.v1.Control/", method, "\",code=\"", code,
                      "\"}");
}

double rpc_count(const std::map<std::string, double>& series, const std::string& method,
                 const std::string& code) {
  const auto it = series.find(rpc_series(method, code));
  return it == series.end() ? 0 : it->second;  // a counter not yet incremented is absent
}

class MetricsEndpointTest : public ::testing::Test {
 protected:
  bool start_daemon(DaemonOptions options = with_slots(2)) {
    options.extra_args = {"--metrics-listen", "127.0.0.1:0", "--metrics-addr-file",
                          harness_.dir() + "/metrics.addr"};
    if (!harness_.start(options)) return false;
    std::ifstream file(harness_.dir() + "/metrics.addr");
    std::getline(file, metrics_address_);
    EXPECT_FALSE(metrics_address_.empty()) << "accumd wrote no --metrics-addr-file";
    return !metrics_address_.empty();
  }
  // One GetJob of an id no job has, answered NOT_FOUND (one count for the RPC series).
  void get_unknown_job() {
    accum::v1::GetJobRequest request;
    request.set_id("job-999999");
    accum::v1::JobStatus unused;
    auto context = harness_.context();
    EXPECT_EQ(harness_.stub().GetJob(context.get(), request, &unused).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }

  DaemonHarness harness_;
  std::string metrics_address_;
};

// A job's end that the store refused so far (a full disk; here a failed launch, the refusals
// from the test-only ACCUM_TEST_REFUSE_TRANSITIONS) is its state on the endpoint too, as
// GetJob shows it, not the STARTING the store still holds.
TEST_F(MetricsEndpointTest, StateTheStoreRefusedIsTheJobsGaugeState) {
  DaemonOptions options = with_slots(1);
  options.extra_env = {"ACCUM_TEST_REFUSE_TRANSITIONS=FAILED:50"};  // about 5 s of ticks
  ASSERT_TRUE(start_daemon(options));
  // The blocker holds the only slot while a file takes the place of the queued job's first
  // log folder, so that launch fails once the blocker is gone.
  accum::v1::JobStatus blocker, job;
  ASSERT_TRUE(harness_.submit(harness_.spec_json("blocker", 100000, 1, 0), &blocker).ok());
  ASSERT_TRUE(harness_.submit(harness_.spec_json("unlaunchable", 3, 1, 0), &job).ok());
  std::ofstream(job.job_dir() + "/logs/attempt-1") << "not a folder\n";
  ASSERT_TRUE(harness_.cancel(blocker.id(), /*force=*/true).ok());
  ASSERT_TRUE(wait_for_log(harness_, "the job store refused its new state FAILED",
                           std::chrono::seconds(20)));

  const auto series = scrape(metrics_address_);
  ASSERT_EQ(harness_.get(job.id()).state(), accum::v1::FAILED);
  ASSERT_NE(harness_.get(job.id()).message().find("not yet in the job store"), std::string::npos)
      << "the store took the FAILED before the scrape: the window this test needs is gone";
  EXPECT_EQ(value_of(series,
                     job_series("accumd_job_state", job.id(), "unlaunchable", ",state=\"FAILED\"")),
            1);
  EXPECT_EQ(value_of(series, job_series("accumd_job_state", job.id(), "unlaunchable",
                                        ",state=\"STARTING\"")),
            0);
}

TEST_F(MetricsEndpointTest, ScrapeWhileJobTrainsMatchesGrpcAndMetricsFile) {
  ASSERT_TRUE(start_daemon());
  accum::v1::JobStatus job;
  constexpr int kMaxSteps = 100000;  // runs until the test cancels it
  ASSERT_TRUE(harness_.submit(harness_.spec_json("scraped", kMaxSteps, 1, 0), &job).ok());
  const std::string id = job.id();
  const auto before = harness_.wait_for(id, [](const accum::v1::JobStatus& status) {
    return status.state() == accum::v1::RUNNING && status.last_metrics().step() >= 2;
  });
  ASSERT_EQ(before.state(), accum::v1::RUNNING);

  const auto series = scrape(metrics_address_);
  const auto after = harness_.get(id);
  EXPECT_EQ(value_of(series, job_series("accumd_job_state", id, "scraped", ",state=\"RUNNING\"")),
            1);
  EXPECT_EQ(value_of(series, job_series("accumd_job_state", id, "scraped", ",state=\"QUEUED\"")),
            0);
  EXPECT_EQ(value_of(series, job_series("accumd_job_state", id, "scraped", ",state=\"SUCCEEDED\"")),
            0);
  const double step = value_of(series, job_series("accumd_job_step", id, "scraped"));
  EXPECT_GE(step, static_cast<double>(before.last_metrics().step()));
  EXPECT_LE(step, static_cast<double>(after.last_metrics().step()));
  EXPECT_EQ(value_of(series, job_series("accumd_job_max_steps", id, "scraped")), kMaxSteps);
  EXPECT_EQ(value_of(series, job_series("accumd_job_restarts", id, "scraped")), 0);
  const double loss = value_of(series, job_series("accumd_job_loss", id, "scraped"));
  const double tokens_per_s =
      value_of(series, job_series("accumd_job_tokens_per_second", id, "scraped"));
  const double model_tflops =
      value_of(series, job_series("accumd_job_model_tflops", id, "scraped"));
  EXPECT_EQ(value_of(series, "accumd_jobs{state=\"RUNNING\"}"), 1);
  EXPECT_EQ(value_of(series, "accumd_jobs{state=\"SUCCEEDED\"}"), 0);
  EXPECT_EQ(value_of(series, "accumd_slots"), 2);
  EXPECT_EQ(value_of(series, "accumd_slots_in_use"), 1);
  EXPECT_GT(value_of(series, "accumd_uptime_seconds"), 0);
  EXPECT_GE(rpc_count(series, "SubmitJob", "OK"), 1);

  // RPC counters move by exactly the calls made here: 3 GetJob OK, 2 NOT_FOUND,
  // 1 UNAUTHENTICATED (no token).
  const auto counted_before = scrape(metrics_address_);
  for (int i = 0; i < 3; ++i) (void)harness_.get(id);
  for (int i = 0; i < 2; ++i) get_unknown_job();
  {
    accum::v1::GetJobRequest request;
    request.set_id(id);
    accum::v1::JobStatus unused;
    grpc::ClientContext no_token;
    EXPECT_EQ(harness_.stub().GetJob(&no_token, request, &unused).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  const auto counted_after = scrape(metrics_address_);
  EXPECT_EQ(rpc_count(counted_after, "GetJob", "OK") - rpc_count(counted_before, "GetJob", "OK"),
            3);
  EXPECT_EQ(rpc_count(counted_after, "GetJob", "NOT_FOUND") -
                rpc_count(counted_before, "GetJob", "NOT_FOUND"),
            2);
  EXPECT_EQ(rpc_count(counted_after, "GetJob", "UNAUTHENTICATED") -
                rpc_count(counted_before, "GetJob", "UNAUTHENTICATED"),
            1);

  // The job ends: its series leave, the counts by state follow.
  ASSERT_TRUE(harness_.cancel(id, /*force=*/true).ok());
  harness_.wait_for(id, [](const accum::v1::JobStatus& status) {
    return status.state() == accum::v1::CANCELLED;
  });
  const auto ended = scrape(metrics_address_);
  EXPECT_EQ(ended.count(job_series("accumd_job_step", id, "scraped")), 0u);
  EXPECT_EQ(value_of(ended, "accumd_jobs{state=\"CANCELLED\"}"), 1);
  EXPECT_EQ(value_of(ended, "accumd_jobs{state=\"RUNNING\"}"), 0);
  EXPECT_EQ(value_of(ended, "accumd_slots_in_use"), 0);

  // The scraped loss, tokens/s and model TFLOP/s are those of the scraped step in
  // metrics.jsonl.
  std::ifstream metrics_file(after.job_dir() + "/metrics.jsonl");
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  bool found = false;
  for (std::string line; std::getline(metrics_file, line) && !found;) {
    accum::v1::StepMetrics row;
    if (!google::protobuf::util::JsonStringToMessage(line, &row, options).ok()) continue;
    if (row.step() != static_cast<int64_t>(step)) continue;
    found = true;
    EXPECT_NEAR(loss, row.loss(), 1e-9 * std::abs(row.loss()));
    EXPECT_NEAR(tokens_per_s, row.tokens_per_s(), 1e-9 * row.tokens_per_s());
    EXPECT_GT(row.model_tflops(), 0) << line;
    EXPECT_NEAR(model_tflops, row.model_tflops(), 1e-9 * row.model_tflops());
  }
  EXPECT_TRUE(found) << "step " << step << " is not in " << after.job_dir() << "/metrics.jsonl";
}

TEST_F(MetricsEndpointTest, AnswersOtherRequestsWithHttpErrors) {
  ASSERT_TRUE(start_daemon());
  EXPECT_EQ(http_exchange(metrics_address_, "GET /other HTTP/1.0\r\n\r\n").status_line,
            "HTTP/1.0 404 Not Found");
  const auto post =
      http_exchange(metrics_address_, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(post.status_line, "HTTP/1.0 405 Method Not Allowed");
  EXPECT_NE(post.head.find("Allow: GET"), std::string::npos);
  EXPECT_EQ(http_exchange(metrics_address_, "garbage\r\n\r\n").status_line,
            "HTTP/1.0 400 Bad Request");
  // A client that connects and sends nothing does not block the next scrape, and is
  // answered 408 once its request head is 2 s late.
  const int silent = connect_to(metrics_address_);
  ASSERT_GE(silent, 0);
  const auto series = scrape(metrics_address_);
  EXPECT_EQ(value_of(series, "accumd_slots"), 2);
  const std::string late = read_to_end(silent);
  EXPECT_EQ(late.substr(0, late.find("\r\n")), "HTTP/1.0 408 Request Timeout") << late;
  close(silent);
}

// A client that trickles its request head a byte at a time neither holds up another
// client's scrape nor keeps its connection: the head must arrive whole within 2 s, however
// steadily its bytes come (before, each byte restarted a 2 s wait, so one client could
// keep the one-connection-at-a-time endpoint for the 27 minutes 8 KiB took, and every
// scrape waited behind it).
TEST_F(MetricsEndpointTest, ATricklingClientNeitherStallsScrapesNorKeepsItsConnection) {
  ASSERT_TRUE(start_daemon());
  const int trickling = connect_to(metrics_address_);
  ASSERT_GE(trickling, 0);
  std::atomic<bool> connected{true};
  std::string trickled_reply;
  std::thread trickler([&] {
    const std::string head = "GET /metrics HTTP/1.0\r\nX-Padding: " + std::string(8000, 'x');
    // One byte every 100 ms for at most 60 s, until the server closes the connection.
    for (size_t i = 0; i < 600 && i < head.size(); ++i) {
      if (send(trickling, &head[i], 1, MSG_NOSIGNAL) != 1) break;
      pollfd readable{trickling, POLLIN, 0};
      if (poll(&readable, 1, 100) > 0) break;  // the server answered (and will close)
    }
    trickled_reply = read_to_end(trickling);
    connected = false;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the trickle has started
  const auto series = scrape(metrics_address_);
  const bool scraped_while_trickling = connected.load();
  trickler.join();
  close(trickling);
  EXPECT_EQ(value_of(series, "accumd_slots"), 2);
  EXPECT_TRUE(scraped_while_trickling) << "the scrape was answered only after the trickling "
                                          "client had gone";
  EXPECT_EQ(trickled_reply.substr(0, trickled_reply.find("\r\n")), "HTTP/1.0 408 Request Timeout")
      << "the trickling client got: " << trickled_reply;
}

// At most 8 connections are served at once; the next is told so at once (503 with
// Retry-After) instead of waiting behind them, and scrapes work again once they are gone.
TEST_F(MetricsEndpointTest, ConnectionsBeyondTheLimitAreAnswered503AtOnce) {
  ASSERT_TRUE(start_daemon());
  std::vector<int> silent;
  for (int i = 0; i < 8; ++i) {
    silent.push_back(connect_to(metrics_address_));
    ASSERT_GE(silent.back(), 0);
  }
  const HttpReply refused = http_exchange(metrics_address_, "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_EQ(refused.status_line, "HTTP/1.0 503 Service Unavailable") << refused.head;
  EXPECT_NE(refused.head.find("Retry-After: 1"), std::string::npos) << refused.head;
  for (const int fd : silent) close(fd);
  // Each closed connection ends its handler (a 400 to nobody) within moments.
  HttpReply reply;
  for (int attempt = 0; attempt < 100; ++attempt) {
    reply = http_exchange(metrics_address_, "GET /metrics HTTP/1.0\r\n\r\n");
    if (reply.status_line != "HTTP/1.0 503 Service Unavailable") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(reply.status_line, "HTTP/1.0 200 OK");
}

// A metrics port that is taken stops accumd before it touches any job, and before it says
// it listens: a second accumd on the same state dir is refused anyway, but a fresh one must
// not launch queued jobs and then exit.
TEST_F(MetricsEndpointTest, BusyMetricsPortStopsAccumdBeforeItServes) {
  ASSERT_TRUE(start_daemon());
  std::string output;
  const std::string command = "timeout 20 " + harness_.build_dir() + "/bin/accumd --state-dir '" +
                              harness_.dir() + "/other-state' --listen 127.0.0.1:0 " +
                              "--metrics-listen " + metrics_address_;
  EXPECT_EQ(run_command(command, &output), 1) << output;
  EXPECT_NE(output.find(metrics_address_), std::string::npos) << output;
  EXPECT_EQ(output.find("accumd listening on"), std::string::npos) << output;
}

// Any client, without a token, may call any method path: each one it makes up must not
// become a series of its own (the scrape and accumd's memory would grow without bound).
TEST_F(MetricsEndpointTest, MethodsAccumdDoesNotServeShareOneSeries) {
  ASSERT_TRUE(start_daemon());
  const auto before = scrape(metrics_address_);
  auto channel = grpc::CreateChannel(harness_.address(), grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue queue;
  constexpr int kCalls = 20;
  for (int i = 0; i < kCalls; ++i) {
    grpc::ClientContext context;
    grpc::ByteBuffer request, reply;
    auto call =
        stub.PrepareUnaryCall(&context, absl::StrCat("/made.Up/Method", i), request, &queue);
    call->StartCall();
    grpc::Status status;
    call->Finish(&reply, &status, reinterpret_cast<void*>(1));
    void* tag = nullptr;
    bool ok = false;
    ASSERT_TRUE(queue.Next(&tag, &ok));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  }
  queue.Shutdown();
  const auto after = scrape(metrics_address_);
  const std::string unknown = "accumd_rpcs_total{method=\"unknown\",code=\"UNIMPLEMENTED\"}";
  EXPECT_EQ(value_of(after, unknown) - (before.count(unknown) ? before.at(unknown) : 0), kCalls);
  for (const auto& [series, value] : after) {
    EXPECT_EQ(series.find("made.Up"), std::string::npos) << series << " " << value;
  }
  // accumd's own methods keep their names.
  get_unknown_job();
  EXPECT_EQ(rpc_count(scrape(metrics_address_), "GetJob", "NOT_FOUND"), 1);
}

TEST(RpcMethodLabel, NamesServedMethodsAndFoldsTheRest) {
  using accum::control::rpc_method_label;
  EXPECT_EQ(rpc_method_label("/accum.v1.Control/GetJob"), "/accum.v1.Control/GetJob");
  EXPECT_EQ(rpc_method_label("/accum.v1.WorkerLink/Connect"), "/accum.v1.WorkerLink/Connect");
  EXPECT_EQ(rpc_method_label("/grpc.health.v1.Health/Check"), "/grpc.health.v1.Health/Check");
  EXPECT_EQ(rpc_method_label("/accum.v1.Control/NoSuchMethod"), "unknown");
  EXPECT_EQ(rpc_method_label("/made.Up/Method"), "unknown");
  EXPECT_EQ(rpc_method_label("/accum.v1.JobSpec/name"), "unknown");  // a message, not a service
  EXPECT_EQ(rpc_method_label("no-slash"), "unknown");
  EXPECT_EQ(rpc_method_label(""), "unknown");
}

TEST(PrometheusText, EscapesLabelValuesAndRendersOneHotState) {
  EXPECT_EQ(accum::control::escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  accum::control::DaemonSnapshot snapshot;
  accum::control::JobGauges job;
  job.id = "job-000007";
  job.name = "say \"hi\"";
  job.state = accum::v1::RESTARTING;
  job.step = 12;
  job.loss = 2.5;
  job.restarts = 1;
  snapshot.active_jobs.push_back(job);
  snapshot.jobs_by_state[accum::v1::RESTARTING] = 1;
  const std::string text = accum::control::render_prometheus(snapshot);
  const std::string labels = "job_id=\"job-000007\",name=\"say \\\"hi\\\"\"";
  EXPECT_NE(text.find("accumd_job_state{" + labels + ",state=\"RESTARTING\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("accumd_job_state{" + labels + ",state=\"RUNNING\"} 0\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("accumd_job_step{" + labels + "} 12\n"), std::string::npos) << text;
  EXPECT_NE(text.find("accumd_job_loss{" + labels + "} 2.5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("accumd_job_restarts{" + labels + "} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("accumd_jobs{state=\"RESTARTING\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("accumd_jobs{state=\"FAILED\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE accumd_rpcs_total counter\n"), std::string::npos) << text;
}

// A step that counted no target has no loss: the series has no sample rather than a 0 that
// reads as a perfect model. A job that is not RUNNING trains no tokens, whatever its last
// step's rate was.
TEST(PrometheusText, StepGaugesShowNoLossForAnAllMaskedStepAndNoRateUnlessRunning) {
  accum::v1::StepMetrics last;
  last.set_step(7);
  last.set_tokens_per_s(1234.5);
  last.set_model_tflops(0.25);
  accum::control::JobGauges job;
  job.id = "job-000009";
  job.name = "masked";
  job.state = accum::v1::RUNNING;
  accum::control::set_step_gauges(&job, last);  // no loss: every target was masked
  EXPECT_EQ(job.step, 7);
  EXPECT_FALSE(job.loss.has_value());
  EXPECT_EQ(job.tokens_per_s, 1234.5);
  EXPECT_EQ(job.model_tflops, 0.25);
  accum::control::DaemonSnapshot snapshot;
  snapshot.active_jobs.push_back(job);
  std::string text = accum::control::render_prometheus(snapshot);
  const std::string labels = "job_id=\"job-000009\",name=\"masked\"";
  EXPECT_EQ(text.find("accumd_job_loss{"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE accumd_job_loss gauge\n"), std::string::npos) << text;
  EXPECT_NE(text.find("accumd_job_tokens_per_second{" + labels + "} 1234.5\n"), std::string::npos)
      << text;

  last.set_loss(3.5);
  job.state = accum::v1::RESTARTING;
  accum::control::set_step_gauges(&job, last);
  EXPECT_EQ(job.loss, 3.5);
  EXPECT_EQ(job.tokens_per_s, 0);
  EXPECT_EQ(job.model_tflops, 0);
  snapshot.active_jobs = {job};
  text = accum::control::render_prometheus(snapshot);
  EXPECT_NE(text.find("accumd_job_loss{" + labels + "} 3.5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("accumd_job_tokens_per_second{" + labels + "} 0\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("accumd_job_model_tflops{" + labels + "} 0\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace accum::testing
