// tests/daemon/daemon_harness.cpp — starting, killing and talking to accumd.
#include "tests/daemon/daemon_harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "daemon/spec/spec.h"
#include "gtest/gtest.h"

extern char** environ;

namespace accum::testing {
namespace fs = std::filesystem;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream file(path);
  std::stringstream buffer;
  buffer << file.rdbuf();
  return buffer.str();
}

std::vector<std::string> cmdline_of(pid_t pid) {
  std::string raw = read_text(absl::StrCat("/proc/", pid, "/cmdline"));
  std::vector<std::string> args;
  size_t start = 0;
  for (size_t end = raw.find('\0'); end != std::string::npos; end = raw.find('\0', start)) {
    args.push_back(raw.substr(start, end - start));
    start = end + 1;
  }
  return args;
}

std::string environ_value(pid_t pid, const std::string& name) {
  std::string raw = read_text(absl::StrCat("/proc/", pid, "/environ"));
  const std::string key = name + "=";
  size_t start = 0;
  while (start < raw.size()) {
    size_t end = raw.find('\0', start);
    if (end == std::string::npos) end = raw.size();
    if (raw.compare(start, key.size(), key) == 0)
      return raw.substr(start + key.size(), end - start - key.size());
    start = end + 1;
  }
  return "";
}

std::vector<pid_t> all_pids() {
  std::vector<pid_t> pids;
  if (DIR* proc = opendir("/proc")) {
    while (dirent* entry = readdir(proc)) {
      pid_t pid = 0;
      if (absl::SimpleAtoi(entry->d_name, &pid)) pids.push_back(pid);
    }
    closedir(proc);
  }
  return pids;
}

}  // namespace

DaemonHarness::DaemonHarness() {
  char pattern[] = "/tmp/accumd-test-XXXXXX";
  dir_ = mkdtemp(pattern);
  token_file_ = dir_ + "/token";
  std::ofstream(token_file_) << "s3cret-token-" << getpid() << "\n";
  // A small English-like corpus: every byte is a token (vocab 256).
  corpus_ = dir_ + "/corpus.txt";
  std::mt19937 rng(7);
  const std::vector<std::string> words = {
      "the ",   "accumulation ", "gradient ", "of ",  "step ", "optimizer ", "a ",
      "token ", "batch ",        "rank ",     "and ", "loss ", "\n"};
  std::ofstream corpus(corpus_);
  for (int i = 0; i < 20000; ++i) corpus << words[rng() % words.size()];
}

DaemonHarness::~DaemonHarness() {
  if (daemon_pid_ > 0) kill9();
  // Workers outlive accumd by design; a test must not leave them behind.
  for (pid_t pid : all_pids()) {
    const auto args = cmdline_of(pid);
    for (const auto& arg : args) {
      if (arg.rfind(dir_ + "/", 0) == 0) {
        kill(pid, SIGKILL);
        break;
      }
    }
  }
  std::error_code error;
  if (!std::getenv("ACCUM_KEEP_TEST_DIR")) fs::remove_all(dir_, error);
}

std::string DaemonHarness::build_dir() const {
  const char* dir = std::getenv("ACCUM_BUILD_DIR");
  return dir ? dir : "build";
}

bool DaemonHarness::start(const DaemonOptions& options) {
  const std::string addr_file = dir_ + "/accumd.addr";
  fs::remove(addr_file);
  const std::string listen = address_.empty() ? "127.0.0.1:0" : address_;
  std::vector<std::string> args = {build_dir() + "/bin/accumd",
                                   "--listen",
                                   listen,
                                   "--state-dir",
                                   dir_ + "/state",
                                   "--token-file",
                                   token_file_,
                                   "--slots",
                                   std::to_string(options.slots),
                                   "--addr-file",
                                   addr_file,
                                   "--restart-backoff-ms",
                                   "200",
                                   "--mpirun-arg",
                                   "--bind-to",
                                   "--mpirun-arg",
                                   "none",
                                   "--mpirun-arg",
                                   "--mca",
                                   "--mpirun-arg",
                                   "btl",
                                   "--mpirun-arg",
                                   "self,vader"};
  args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  const std::string log = dir_ + "/accumd.log";
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  // Workers inherit accumd's environment: one OpenMP thread per rank keeps the
  // tiny test models fast on a small, shared machine.
  std::vector<std::string> env_strings = {"OMP_NUM_THREADS=1"};
  env_strings.insert(env_strings.end(), options.extra_env.begin(), options.extra_env.end());
  for (char** entry = environ; *entry; ++entry) {
    if (std::string(*entry).rfind("OMP_NUM_THREADS=", 0) != 0) env_strings.emplace_back(*entry);
  }
  std::vector<char*> envp;
  for (auto& entry : env_strings) envp.push_back(entry.data());
  envp.push_back(nullptr);
  const int rc = posix_spawn(&daemon_pid_, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    ADD_FAILURE() << "cannot start " << args[0] << ": " << strerror(rc);
    daemon_pid_ = 0;
    return false;
  }
  for (int i = 0; i < 300 && !fs::exists(addr_file); ++i) {
    int status = 0;
    if (waitpid(daemon_pid_, &status, WNOHANG) == daemon_pid_) {
      daemon_pid_ = 0;
      ADD_FAILURE() << "accumd exited at start-up:\n" << read_text(log);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::string bound = read_text(addr_file);
  while (!bound.empty() && std::isspace(static_cast<unsigned char>(bound.back()))) bound.pop_back();
  if (bound.empty()) {
    ADD_FAILURE() << "accumd did not write its address:\n" << read_text(log);
    return false;
  }
  address_ = bound;
  stub_ = accum::v1::Control::NewStub(
      grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  return true;
}

void DaemonHarness::kill9() {
  if (daemon_pid_ <= 0) return;
  kill(daemon_pid_, SIGKILL);
  waitpid(daemon_pid_, nullptr, 0);
  daemon_pid_ = 0;
}

std::optional<int> DaemonHarness::wait_exit(std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (daemon_pid_ > 0 && std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(daemon_pid_, &status, WNOHANG) == daemon_pid_) {
      daemon_pid_ = 0;
      return status;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "accumd (pid " << daemon_pid_ << ") still runs after " << timeout.count()
                << " s; expected it to exit by itself";
  return std::nullopt;
}

void DaemonHarness::stop() {
  if (daemon_pid_ <= 0) return;
  kill(daemon_pid_, SIGTERM);
  waitpid(daemon_pid_, nullptr, 0);
  daemon_pid_ = 0;
}

void DaemonHarness::send_signal(int signal_number) {
  if (daemon_pid_ > 0) kill(daemon_pid_, signal_number);
}

bool DaemonHarness::alive() {
  if (daemon_pid_ <= 0) return false;
  if (waitpid(daemon_pid_, nullptr, WNOHANG) == daemon_pid_) daemon_pid_ = 0;
  return daemon_pid_ > 0;
}

std::string DaemonHarness::worker_failing_after_it() const {
  const std::string path = dir_ + "/worker-failing-after-it.sh";
  std::ofstream(path) << "#!/bin/sh\n'" << build_dir() << "/bin/accum-worker' \"$@\" || exit $?\n"
                      << "exit 1\n";
  std::filesystem::permissions(path, std::filesystem::perms::owner_all);
  return path;
}

std::string DaemonHarness::spec_json(const std::string& name, int max_steps, int world_size,
                                     int checkpoint_every, const std::string& extra_fields) const {
  // B*T*N*K: 2 x 32 x world x 4 tokens per update; K = 4 micro-batches per step.
  return absl::StrFormat(
      R"({"name": "%s",
  "model": {"n_layer": 2, "n_head": 2, "d_model": 64, "vocab_size": 256, "max_seq_len": 32},
  "data": {"train": "%s", "format": "TEXT_BYTES"},
  "batch": {"micro_batch_size": 2, "seq_len": 32, "tokens_per_update": %d},
  "optimizer": {"lr": 0.003, "schedule": "constant", "warmup_steps": 0},
  "max_steps": %d, "seed": 1, "world_size": %d,
  "checkpoint": {"every_steps": %d, "keep_last": 0}%s})",
      name, corpus_, 2 * 32 * 4 * world_size, max_steps, world_size, checkpoint_every,
      extra_fields.empty() ? "" : ", " + extra_fields);
}

std::string DaemonHarness::slow_spec_json(const std::string& name, int max_steps) const {
  std::string spec = spec_json(name, max_steps, 1, 0);
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {R"("n_layer": 2, "n_head": 2, "d_model": 64)",
            R"("n_layer": 4, "n_head": 4, "d_model": 256)"},
           {R"("tokens_per_update": 256)", R"("tokens_per_update": 20480)"}}) {
    const size_t at = spec.find(from);
    if (at == std::string::npos) throw std::logic_error(from + " is not in spec_json's spec");
    spec.replace(at, from.size(), to);
  }
  return spec;
}

std::unique_ptr<grpc::ClientContext> DaemonHarness::context(int deadline_s) const {
  auto context = std::make_unique<grpc::ClientContext>();
  std::string token = read_text(token_file_);
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  context->AddMetadata("authorization", "Bearer " + token);
  if (deadline_s > 0) {
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(deadline_s));
  }
  return context;
}

grpc::Status DaemonHarness::submit(const std::string& json, accum::v1::JobStatus* job) {
  auto spec = accum::spec::parse_spec_json(json);
  if (!spec.ok()) return {grpc::StatusCode::INVALID_ARGUMENT, std::string(spec.status().message())};
  accum::v1::SubmitJobRequest request;
  *request.mutable_spec() = *spec;
  request.set_spec_dir(dir_);
  accum::v1::SubmitJobResponse response;
  auto ctx = context();
  auto status = stub_->SubmitJob(ctx.get(), request, &response);
  if (job) *job = response.job();
  return status;
}

grpc::Status DaemonHarness::cancel(const std::string& id, bool force, accum::v1::JobStatus* job) {
  accum::v1::CancelJobRequest request;
  request.set_id(id);
  request.set_force(force);
  accum::v1::JobStatus reply;
  auto ctx = context();
  auto status = stub_->CancelJob(ctx.get(), request, &reply);
  if (job) *job = reply;
  return status;
}

accum::v1::JobStatus DaemonHarness::get(const std::string& id) {
  accum::v1::GetJobRequest request;
  request.set_id(id);
  accum::v1::JobStatus job;
  auto ctx = context();
  auto status = stub_->GetJob(ctx.get(), request, &job);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return job;
}

accum::v1::JobStatus DaemonHarness::wait_for(
    const std::string& id, const std::function<bool(const accum::v1::JobStatus&)>& done,
    std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  accum::v1::JobStatus job;
  while (std::chrono::steady_clock::now() < deadline) {
    job = get(id);
    if (done(job)) return job;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ADD_FAILURE() << "timed out waiting on job " << id << "; last state "
                << accum::v1::JobState_Name(job.state()) << ": " << job.message()
                << "\naccumd log:\n"
                << read_text(dir_ + "/accumd.log");
  return job;
}

accum::v1::JobStatus DaemonHarness::wait_running(const std::string& id, int64_t step) {
  return wait_for(id, [&](const accum::v1::JobStatus& job) {
    return job.state() == accum::v1::RUNNING && job.last_metrics().step() >= step;
  });
}

std::vector<pid_t> DaemonHarness::worker_pids(const std::string& job_dir) const {
  std::vector<std::pair<int, pid_t>> ranked;
  const std::string spec = job_dir + "/spec.json";
  for (pid_t pid : all_pids()) {
    const auto args = cmdline_of(pid);
    if (args.size() < 3 || args[0].find("accum-worker") == std::string::npos) continue;
    if (std::find(args.begin(), args.end(), spec) == args.end()) continue;
    int rank = 0;
    (void)absl::SimpleAtoi(environ_value(pid, "OMPI_COMM_WORLD_RANK"), &rank);
    ranked.emplace_back(rank, pid);
  }
  std::sort(ranked.begin(), ranked.end());
  std::vector<pid_t> pids;
  for (const auto& [rank, pid] : ranked) pids.push_back(pid);
  return pids;
}

std::vector<accum::v1::JobState> transition_states(const accum::v1::JobStatus& job) {
  std::vector<accum::v1::JobState> states;
  for (const auto& transition : job.transitions()) states.push_back(transition.state());
  return states;
}

bool ended(const accum::v1::JobStatus& job) {
  return job.state() == accum::v1::SUCCEEDED || job.state() == accum::v1::FAILED ||
         job.state() == accum::v1::CANCELLED;
}

bool log_says(const DaemonHarness& daemon, const std::string& text) {
  std::ifstream in(daemon.dir() + "/accumd.log");
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return all.find(text) != std::string::npos;
}

bool wait_for_log(const DaemonHarness& daemon, const std::string& text,
                  std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!log_says(daemon, text) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return log_says(daemon, text);
}

std::vector<std::pair<int64_t, double>> read_metrics(const std::string& path) {
  std::vector<std::pair<int64_t, double>> rows;
  std::ifstream file(path);
  for (std::string line; std::getline(file, line);) {
    const auto step_at = line.find("\"step\":");
    const auto loss_at = line.find("\"loss\":");
    if (step_at == std::string::npos || loss_at == std::string::npos) continue;
    rows.emplace_back(std::atoll(line.c_str() + step_at + 7),
                      std::atof(line.c_str() + loss_at + 7));
  }
  return rows;
}

int run_command(const std::string& command, std::string* output, std::atomic<bool>* printed) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return -1;
  char buffer[4096];
  output->clear();
  // read(), not fread(): fread waits to fill its buffer, and a follower prints a line at a time.
  for (ssize_t n; (n = read(fileno(pipe), buffer, sizeof(buffer))) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    output->append(buffer, static_cast<size_t>(n));
    if (printed) printed->store(true);
  }
  const int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int run_accumctl(const DaemonHarness& harness, const std::vector<std::string>& args,
                 std::string* output, bool with_token, std::atomic<bool>* printed) {
  std::string command = harness.build_dir() + "/bin/accumctl --server " + harness.address();
  if (with_token) command += " --token-file " + harness.token_file();
  for (const auto& arg : args) command += " '" + arg + "'";
  return run_command(command, output, printed);
}

}  // namespace accum::testing
