// tests/daemon/e2e_security_test.cpp — the daemon's edges: tokens, malformed
// specs, unknown ids, a burst of garbage, accumctl's exit codes and flags out of
// range. TLS: e2e_tls_test.cpp.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"
#include "tests/daemon/daemon_harness.h"

namespace accum::testing {
namespace {

grpc::StatusCode health_check(const std::string& address) {
  // grpc.health.v1.Health/Check with an empty service name, as raw bytes.
  grpc::GenericStub stub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::Slice empty("", 0);
  grpc::ByteBuffer request(&empty, 1), response;
  std::mutex mutex;
  std::condition_variable done;
  bool finished = false;
  grpc::Status result;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status status) {
                   std::lock_guard lock(mutex);
                   result = status;
                   finished = true;
                   done.notify_one();
                 });
  std::unique_lock lock(mutex);
  done.wait(lock, [&] { return finished; });
  return result.error_code();
}

TEST(DaemonSecurity, MissingOrWrongTokenIsUnauthenticated) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start());
  auto stub = accum::v1::Control::NewStub(
      grpc::CreateChannel(daemon.address(), grpc::InsecureChannelCredentials()));
  accum::v1::ListJobsRequest request;
  accum::v1::ListJobsResponse response;
  {
    grpc::ClientContext context;
    EXPECT_EQ(stub->ListJobs(&context, request, &response).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer not-the-token");
    EXPECT_EQ(stub->ListJobs(&context, request, &response).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Basic abc");
    accum::v1::SubmitJobRequest submit;
    accum::v1::SubmitJobResponse reply;
    EXPECT_EQ(stub->SubmitJob(&context, submit, &reply).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  auto context = daemon.context();
  EXPECT_TRUE(daemon.stub().ListJobs(context.get(), request, &response).ok());
  // Health needs no token.
  EXPECT_EQ(health_check(daemon.address()), grpc::StatusCode::OK);
}

TEST(DaemonSecurity, MalformedSpecsAreInvalidArgumentNamingTheField) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start());
  struct Case {
    std::string extra;  // merged over the valid spec
    std::string field;  // must appear in the error
  };
  const std::string valid = daemon.spec_json("bad", 5, 1, 0);
  auto replace_in = [&](std::string text, const std::string& from, const std::string& to) {
    const auto at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) text.replace(at, from.size(), to);
    return text;
  };
  auto replace = [&](const std::string& from, const std::string& to) {
    return replace_in(valid, from, to);
  };
  auto with = [&](const std::string& field) {  // a field added to the valid spec
    return replace("\"max_steps\": 5", "\"max_steps\": 5, " + field);
  };
  std::filesystem::create_directories(daemon.dir() + "/a-folder");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {replace("\"seq_len\": 32", "\"seq_len\": -4"), "batch.seq_len"},
      {replace("\"n_head\": 2", "\"n_head\": 3"), "n_head"},
      {replace("\"tokens_per_update\": 256", "\"tokens_per_update\": 300"), "300"},
      {replace("\"max_steps\": 5", "\"max_steps\": -1"), "max_steps"},
      {replace("\"max_steps\": 5", "\"max_steps\": 5, \"max_restarts\": -1"),
       "`max_restarts`: got -1, expected an integer in [0, 1000]"},
      {replace("\"lr\": 0.003", "\"lr\": -1"), "optimizer.lr"},
      {replace("corpus.txt", "no-such-corpus.txt"), "data.train"},
      // Each of these used to be accepted and fail only when the job ran.
      {replace("\"world_size\": 1", "\"world_size\": -3"), "`world_size`: got -3"},
      {with("\"device\": 7"), "`device`: got 7"},
      {replace("\"TEXT_BYTES\"", "42"), "`data.format`: got 42"},
      {with("\"precision\": 9"), "`precision`: got 9, which is not a known value"},
      {with("\"launch\": {\"hostfile\": \"no-such-hostfile\"}"),
       "launch.hostfile: '" + daemon.dir() + "/no-such-hostfile' does not exist"},
      {with("\"launch\": {\"hostfile\": \"a-folder\"}"),
       "launch.hostfile: '" + daemon.dir() + "/a-folder' is not a regular file"},
      {replace("\"format\"", "\"val\": \"\", \"format\""), "`data.val`: contains an empty path"},
      // Each of these used to be accepted, and failed the job's first attempt instead.
      {replace("corpus.txt", "no-such-*.txt"),
       "data.train: data path pattern '" + daemon.dir() + "/no-such-*.txt' matches no file"},
      {replace("\"format\"", "\"val\": \"no-such-val.txt\", \"format\""),
       "data.val: '" + daemon.dir() + "/no-such-val.txt' does not exist; expected a readable file"},
      {replace("corpus.txt", "a-folder"),
       "data.train: '" + daemon.dir() + "/a-folder' is not a regular file"},
      {with("\"init_from\": \"a-folder\""),
       "init_from: '" + daemon.dir() + "/a-folder' is not a regular file"},
      {with("\"init_from\": \"corpus.txt\""),
       "init_from: safetensors file " + daemon.dir() + "/corpus.txt: header length"},
      // Would run a shell as accumd's user.
      {with("\"launch\": {\"mpirun_args\": [\"/bin/sh\", \"-c\", \"id\"]}"),
       "launch.mpirun_args[0]: '/bin/sh' is not an option"},
      {replace("\"every_steps\": 0", "\"every_steps\": -2"), "`checkpoint.every_steps`: got -2"},
      {with("\"log_every_steps\": -1"), "`log_every_steps`: got -1"},
      // d_model 64 / n_head 16 = head size 4: no CUDA attention kernel for it.
      {replace_in(daemon.spec_json("bad", 5, 1, 0, "\"device\": \"CUDA\""), "\"n_head\": 2",
                  "\"n_head\": 16"),
       "model.d_model 64 / model.n_head 16 gives head size 4"},
  };
  for (const auto& [json, field] : cases) {
    accum::v1::JobStatus job;
    const auto status = daemon.submit(json, &job);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_NE(status.error_message().find(field), std::string::npos)
        << "error '" << status.error_message() << "' should name " << field;
  }
  // A spec too big for the job store and ListJobs: 12000 copies of the corpus path.
  std::string many = "[";
  for (int i = 0; i < 12000; ++i) many += (i ? ", \"" : "\"") + daemon.dir() + "/corpus.txt\"";
  many += "]";
  const std::string huge =
      replace("\"train\": \"" + daemon.dir() + "/corpus.txt\"", "\"train\": " + many);
  accum::v1::JobStatus none;
  const auto too_big = daemon.submit(huge, &none);
  EXPECT_EQ(too_big.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << too_big.error_message();
  EXPECT_NE(too_big.error_message().find("(data.train lists 12000 paths); expected at most 262144"),
            std::string::npos)
      << too_big.error_message();
  // A relative spec_dir is refused, naming the field.
  accum::v1::SubmitJobRequest request;
  request.set_spec_dir("relative/dir");
  accum::v1::SubmitJobResponse response;
  auto context = daemon.context();
  const auto status = daemon.stub().SubmitJob(context.get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("spec_dir"), std::string::npos);
}

TEST(DaemonSecurity, UnknownIdIsNotFoundEverywhere) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start());
  const std::string id = "job-999999";
  {
    accum::v1::GetJobRequest request;
    request.set_id(id);
    accum::v1::JobStatus job;
    auto context = daemon.context();
    EXPECT_EQ(daemon.stub().GetJob(context.get(), request, &job).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  EXPECT_EQ(daemon.cancel(id, /*force=*/false).error_code(), grpc::StatusCode::NOT_FOUND);
  {
    accum::v1::CheckpointJobRequest request;
    request.set_id(id);
    accum::v1::CheckpointInfo info;
    auto context = daemon.context();
    EXPECT_EQ(daemon.stub().CheckpointJob(context.get(), request, &info).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  {
    accum::v1::ContinueJobRequest request;
    request.set_id(id);
    accum::v1::SubmitJobResponse response;
    auto context = daemon.context();
    EXPECT_EQ(daemon.stub().ContinueJob(context.get(), request, &response).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  {
    accum::v1::DeleteJobRequest request;
    request.set_id(id);
    accum::v1::DeleteJobResponse response;
    auto context = daemon.context();
    EXPECT_EQ(daemon.stub().DeleteJob(context.get(), request, &response).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  {
    accum::v1::WatchJobRequest request;
    request.set_id(id);
    auto context = daemon.context();
    auto reader = daemon.stub().WatchJob(context.get(), request);
    accum::v1::JobEvent event;
    EXPECT_FALSE(reader->Read(&event));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    accum::v1::StreamLogsRequest request;
    request.set_id(id);
    auto context = daemon.context();
    auto reader = daemon.stub().StreamLogs(context.get(), request);
    accum::v1::LogLine line;
    EXPECT_FALSE(reader->Read(&line));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  }
}

TEST(DaemonSecurity, BurstOfMalformedRequestsLeavesDaemonServing) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start());
  std::mt19937 rng(42);
  grpc::GenericStub generic(
      grpc::CreateChannel(daemon.address(), grpc::InsecureChannelCredentials()));
  std::atomic<int> answered{0};
  std::mutex mutex;
  std::condition_variable all_done;
  constexpr int kRaw = 500;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ByteBuffer>> buffers;
  const char* methods[] = {"/accum.v1.Control/SubmitJob", "/accum.v1.Control/GetJob",
                           "/accum.v1.Control/CancelJob", "/accum.v1.WorkerLink/Connect"};
  for (int i = 0; i < kRaw; ++i) {
    std::string garbage(1 + rng() % 2000, '\0');
    for (auto& byte : garbage) byte = static_cast<char>(rng());
    grpc::Slice slice(garbage);
    buffers.push_back(std::make_unique<grpc::ByteBuffer>(&slice, 1));
    buffers.push_back(std::make_unique<grpc::ByteBuffer>());
    contexts.push_back(daemon.context(30));
    generic.UnaryCall(contexts.back().get(), methods[i % 3], grpc::StubOptions(),
                      buffers[buffers.size() - 2].get(), buffers.back().get(), [&](grpc::Status) {
                        if (++answered == kRaw) {
                          std::lock_guard lock(mutex);
                          all_done.notify_one();
                        }
                      });
  }
  // 500 well-formed protos carrying bad content: huge strings, bad ids, bad specs.
  int refused = 0;
  for (int i = 0; i < 500; ++i) {
    accum::v1::SubmitJobRequest request;
    request.mutable_spec()->set_name(std::string(1 + rng() % 5000, 'x'));
    request.mutable_spec()->mutable_batch()->set_seq_len(-static_cast<int>(rng() % 100));
    request.mutable_spec()->mutable_model()->set_preset("preset-" + std::string(rng() % 300, 'p'));
    request.set_spec_dir(i % 2 ? "/" + std::string(rng() % 9000, 'd') : "");
    accum::v1::SubmitJobResponse response;
    auto context = daemon.context(30);
    const auto status = daemon.stub().SubmitJob(context.get(), request, &response);
    refused += status.error_code() == grpc::StatusCode::INVALID_ARGUMENT ? 1 : 0;
  }
  EXPECT_EQ(refused, 500);
  {
    std::unique_lock lock(mutex);
    all_done.wait_for(lock, std::chrono::seconds(60), [&] { return answered == kRaw; });
  }
  EXPECT_EQ(answered.load(), kRaw);
  // An oversized request is refused without harm.
  accum::v1::SubmitJobRequest huge;
  huge.set_spec_dir(std::string(8 << 20, 'a'));
  accum::v1::SubmitJobResponse response;
  auto huge_context = daemon.context();
  EXPECT_EQ(daemon.stub().SubmitJob(huge_context.get(), huge, &response).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Still serving: health, queries, and a real job.
  EXPECT_EQ(health_check(daemon.address()), grpc::StatusCode::OK);
  accum::v1::JobStatus job;
  const auto status = daemon.submit(daemon.spec_json("after-burst", 3, 1, 0), &job);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(
      daemon
          .wait_for(job.id(),
                    [](const accum::v1::JobStatus& j) { return j.state() == accum::v1::SUCCEEDED; })
          .state(),
      accum::v1::SUCCEEDED);
}

TEST(DaemonSecurity, AccumctlExitCodesAndMessages) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start());
  std::string output;
  const std::string spec_path = daemon.dir() + "/job.json";
  std::ofstream(spec_path) << daemon.spec_json("cli", 4, 1, 0);
  // Wrong token: 4 and a message naming the problem.
  const std::string wrong = daemon.dir() + "/wrong-token";
  std::ofstream(wrong) << "nope\n";
  EXPECT_EQ(run_accumctl(daemon, {"--token-file", wrong, "list"}, &output, false), 4) << output;
  EXPECT_NE(output.find("wrong token"), std::string::npos) << output;
  EXPECT_EQ(run_accumctl(daemon, {"list"}, &output, false), 4) << output;
  // Unknown id: 6.
  EXPECT_EQ(run_accumctl(daemon, {"status", "job-424242"}, &output), 6) << output;
  // A folder, or a file that is not there, as the spec: 2, saying which.
  EXPECT_EQ(run_accumctl(daemon, {"submit", daemon.dir()}, &output), 2) << output;
  EXPECT_NE(output.find(daemon.dir() + " is a folder; expected a job spec file"), std::string::npos)
      << output;
  EXPECT_EQ(run_accumctl(daemon, {"submit", daemon.dir() + "/none.json"}, &output), 2) << output;
  EXPECT_NE(output.find("none.json: No such file or directory"), std::string::npos) << output;
  // Endless bytes as the spec: 5, after 16 MiB.
  EXPECT_EQ(run_accumctl(daemon, {"submit", "/dev/zero"}, &output), 5) << output;
  EXPECT_NE(output.find("/dev/zero holds more than 16 MiB"), std::string::npos) << output;
  EXPECT_EQ(run_accumctl(daemon, {"continue", "job-000001", "--max-steps", "99999999999"}, &output),
            2)
      << output;
  EXPECT_NE(output.find("--max-steps: expected a step count in [1, 2147483647]"), std::string::npos)
      << output;
  // Submit, then watch to the end: 0.
  ASSERT_EQ(run_accumctl(daemon, {"submit", spec_path}, &output), 0) << output;
  const std::string id = output.substr(0, output.find('\n'));
  EXPECT_EQ(id.rfind("job-", 0), 0u) << output;
  EXPECT_EQ(run_accumctl(daemon, {"watch", id}, &output), 0) << output;
  EXPECT_NE(output.find("step 4/4"), std::string::npos) << output;
  EXPECT_NE(output.find("SUCCEEDED"), std::string::npos) << output;
  // Watching it again, now that it has ended: its steps, then its final state, last.
  EXPECT_EQ(run_accumctl(daemon, {"watch", id}, &output), 0) << output;
  EXPECT_LT(output.find("step 4/4"), output.find("SUCCEEDED")) << output;
  // States are read in any case.
  EXPECT_EQ(run_accumctl(daemon, {"list", "--state", "succeeded"}, &output), 0) << output;
  EXPECT_NE(output.find(id), std::string::npos) << output;
  // The proto's placeholder state names no job's state: refused, not an empty list.
  EXPECT_EQ(run_accumctl(daemon, {"list", "--state", "job_state_unspecified"}, &output), 2)
      << output;
  EXPECT_NE(output.find("expected QUEUED, STARTING"), std::string::npos) << output;
  EXPECT_EQ(run_accumctl(daemon, {"--output", "json", "status", id}, &output), 0) << output;
  EXPECT_NE(output.find("\"state\":\"SUCCEEDED\""), std::string::npos) << output;
  // The spec left max_restarts out: the daemon's default (3) is what the job runs under.
  EXPECT_EQ(run_accumctl(daemon, {"status", id}, &output), 0) << output;
  EXPECT_NE(output.find("restarts:  0 of 3 allowed"), std::string::npos) << output;
  // The last step's model FLOP/s; a CPU job has no MFU (its back end knows no peak).
  EXPECT_NE(output.find(" TFLOP/s per rank"), std::string::npos) << output;
  EXPECT_EQ(output.find("MFU"), std::string::npos) << output;
  EXPECT_EQ(run_accumctl(daemon, {"logs", id, "--rank", "0"}, &output), 0) << output;
  EXPECT_NE(output.find("[rank 0]"), std::string::npos) << output;
  // JSON lines carry every field, rank 0's rank too.
  EXPECT_EQ(run_accumctl(daemon, {"--output", "json", "logs", id, "--rank", "0"}, &output), 0)
      << output;
  EXPECT_NE(output.find("\"rank\":0"), std::string::npos) << output;
  // A rank the job does not have: 5, naming the ranks it has (it used to print nothing).
  EXPECT_EQ(run_accumctl(daemon, {"logs", id, "--rank", "7"}, &output), 5) << output;
  EXPECT_NE(output.find("rank: got 7; job " + id + " has 1 rank, so expected -1 (all) or 0..0"),
            std::string::npos)
      << output;
  // Cancelling an ended job: 7.
  EXPECT_EQ(run_accumctl(daemon, {"cancel", id}, &output), 7) << output;
  // Unreachable daemon: 3.
  daemon.stop();
  EXPECT_EQ(run_accumctl(daemon, {"list"}, &output), 3) << output;
  EXPECT_NE(output.find("cannot reach accumd"), std::string::npos) << output;
}

// A flag of another verb is a usage error naming the verbs it belongs to, not ignored:
// `submit SPEC --max-steps 300` queued the spec's own max_steps, and `status ID --force`
// did nothing a user could see. Nothing reaches accumd.
TEST(DaemonSecurity, AccumctlRefusesAFlagOfAnotherVerb) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start());
  std::string output;
  const std::string spec_path = daemon.dir() + "/job.json";
  std::ofstream(spec_path) << daemon.spec_json("flags", 4, 1, 0);
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"submit", spec_path, "--max-steps", "300"},
       "--max-steps is a flag of continue, not of submit"},
      {{"--force", "submit", spec_path}, "--force is a flag of cancel, not of submit"},
      {{"submit", spec_path, "-f"}, "-f is a flag of logs, not of submit"},
      {{"list", "--reconnect-s", "5"}, "--reconnect-s is a flag of logs and watch, not of list"},
      {{"status", "job-000001", "--state", "running"}, "--state is a flag of list, not of status"},
  };
  for (const auto& [args, expected] : cases) {
    EXPECT_EQ(run_accumctl(daemon, args, &output), 2) << expected << "\n" << output;
    EXPECT_NE(output.find(expected), std::string::npos) << output;
  }
  ASSERT_EQ(run_accumctl(daemon, {"list"}, &output), 0) << output;
  EXPECT_EQ(output.find("job-"), std::string::npos) << "a refused submit queued a job:\n" << output;
}

TEST(DaemonSecurity, OutOfRangeFlagIsRefusedNamingTheRange) {
  DaemonHarness daemon;  // not started: only its build and scratch folders are used
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--listen 127.0.0.1:0 --max-restarts 1001",
       "--max-restarts '1001': expected an integer in [0, 1000]"},
      // gRPC alone would listen on 99999 - 65536 = 34463.
      {"--listen 127.0.0.1:99999", "--listen '127.0.0.1:99999': expected HOST:PORT with PORT in"},
      {"--listen 127.0.0.1", "--listen '127.0.0.1': expected HOST:PORT"},
      // spdlog alone reads an unknown level as "off": a fatal error would print nothing.
      {"--listen 127.0.0.1:0 --log-level loud",
       "--log-level 'loud': expected one of trace, debug, info, warn, error, critical, off"},
  };
  for (const auto& [flags, expected] : cases) {
    // `timeout`: an accumd that accepted the flag would serve forever.
    const std::string command = "timeout 20 " + daemon.build_dir() + "/bin/accumd --state-dir '" +
                                daemon.dir() + "/state' " + flags;
    std::string output;
    EXPECT_EQ(run_command(command, &output), 2) << flags << "\n" << output;  // a usage error
    EXPECT_NE(output.find(expected), std::string::npos) << flags << "\n" << output;
  }
}

// gRPC sets SO_REUSEPORT unless told not to: a second accumd on the same port would then
// start, and the kernel would hand it half of the connections (jobs it has never heard of).
TEST(DaemonSecurity, SecondDaemonOnTheSamePortIsRefused) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start());
  const std::string command = "timeout 20 " + daemon.build_dir() + "/bin/accumd --state-dir '" +
                              daemon.dir() + "/second-state' --listen " + daemon.address();
  std::string output;
  EXPECT_NE(run_command(command, &output), 0) << output;
  EXPECT_NE(output.find("cannot listen on " + daemon.address()), std::string::npos) << output;
  // The first one still answers every call.
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(run_accumctl(daemon, {"list"}, &output), 0) << output;
  }
}

// The worker link accepts only the processes accumd launched for the attempt: the token
// alone (which every user of a token-protected accumd holds) does not let a client take
// over a running job's link. And what comes over the link is checked: a step outside the
// job's range or a checkpoint outside its folder is ignored, not recorded.
TEST(DaemonSecurity, OnlyTheAttemptsOwnWorkersMayHoldItsLink) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start());
  accum::v1::JobStatus job;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("linked", 100000, 1, 0), &job).ok());
  job = daemon.wait_running(job.id(), 2);
  ASSERT_EQ(job.state(), accum::v1::RUNNING) << job.message();
  auto channel = grpc::CreateChannel(daemon.address(), grpc::InsecureChannelCredentials());
  auto link = accum::v1::WorkerLink::NewStub(channel);
  auto connect = [&](const std::string& key, const std::vector<accum::v1::WorkerEvent>& more) {
    auto context = daemon.context(10);
    auto stream = link->Connect(context.get());
    accum::v1::WorkerEvent hello;
    hello.mutable_hello()->set_job_id(job.id());
    hello.mutable_hello()->set_attempt(1);
    hello.mutable_hello()->set_link_key(key);
    stream->Write(hello);
    for (const auto& event : more) stream->Write(event);
    stream->WritesDone();
    return stream->Finish();
  };
  const grpc::Status refused = connect("", std::vector<accum::v1::WorkerEvent>{});
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED) << refused.error_message();
  EXPECT_NE(refused.error_message().find("does not carry the link key"), std::string::npos)
      << refused.error_message();
  EXPECT_EQ(connect("0123456789abcdef0123456789abcdef", std::vector<accum::v1::WorkerEvent>{})
                .error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // The real worker's link is untouched: its steps keep arriving.
  const int64_t before = daemon.get(job.id()).last_metrics().step();
  const accum::v1::JobStatus later = daemon.wait_for(job.id(), [&](const accum::v1::JobStatus& j) {
    return j.last_metrics().step() > before + 2;
  });
  EXPECT_GT(later.last_metrics().step(), before + 2) << "the worker's link was taken over";

  // With the attempt's key (only the daemon's user can read it): bad events are dropped.
  std::ifstream key_file(job.job_dir() + "/logs/attempt-1/link_key");
  std::string key;
  key_file >> key;
  ASSERT_EQ(key.size(), 32u);
  accum::v1::WorkerEvent negative, far, outside;
  negative.mutable_metrics()->set_step(-5);
  far.mutable_checkpoint_done()->set_step(987654321);
  far.mutable_checkpoint_done()->set_path(job.job_dir() + "/checkpoints/step_987654321");
  outside.mutable_checkpoint_done()->set_step(3);
  outside.mutable_checkpoint_done()->set_path("/etc/step_00000003");
  EXPECT_TRUE(connect(key, std::vector<accum::v1::WorkerEvent>{negative, far, outside}).ok());
  const accum::v1::JobStatus after = daemon.get(job.id());
  EXPECT_GE(after.last_metrics().step(), 0);
  EXPECT_EQ(after.latest_checkpoint_step(), 0);
  std::string output;
  EXPECT_EQ(run_accumctl(daemon, {"cancel", job.id(), "--force"}, &output), 0) << output;
}

}  // namespace
}  // namespace accum::testing
