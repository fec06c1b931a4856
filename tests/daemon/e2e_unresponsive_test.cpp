// tests/daemon/e2e_unresponsive_test.cpp — an accumd that is there but does not answer
// (stopped with SIGSTOP: its port still accepts TCP connections, the kernel completes the
// handshake) must not be reported as absent.
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/daemon/daemon_harness.h"

namespace accum::testing {
namespace {

using accum::v1::JobStatus;
using Clock = std::chrono::steady_clock;

// Stops accumd (SIGSTOP) for its lifetime: SIGCONT on the way out, also when an assertion
// returns early, so that the harness's teardown meets a running process.
class StoppedDaemon {
 public:
  explicit StoppedDaemon(DaemonHarness& daemon) : daemon_(daemon) { daemon_.send_signal(SIGSTOP); }
  ~StoppedDaemon() { daemon_.send_signal(SIGCONT); }
  StoppedDaemon(const StoppedDaemon&) = delete;
  StoppedDaemon& operator=(const StoppedDaemon&) = delete;

 private:
  DaemonHarness& daemon_;
};

// accumctl with a kill after `limit_s`, so that a client that hangs fails the test instead
// of holding it; exit code 137 then.
int run_bounded_accumctl(const DaemonHarness& daemon, int limit_s,
                         const std::vector<std::string>& args, std::string* output,
                         std::atomic<bool>* printed = nullptr) {
  std::string command =
      absl::StrCat("timeout -s KILL ", limit_s, " ", daemon.build_dir(), "/bin/accumctl --server ",
                   daemon.address(), " --token-file ", daemon.token_file());
  for (const auto& arg : args) command += " '" + arg + "'";
  return run_command(command, output, printed);
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// status and list against a stopped accumd: connected (the port accepts), no answer. They
// say so, within about gRPC's 20 s connect timeout, and exit 3; against no accumd at all
// they still say it cannot be reached, at once.
TEST(DaemonUnresponsive, StatusOfAStoppedAccumdSaysItDidNotAnswerNotThatItIsAbsent) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(1)));
  std::string output;
  ASSERT_EQ(run_accumctl(daemon, {"list"}, &output), 0) << output;
  {
    StoppedDaemon stopped(daemon);
    for (const std::vector<std::string>& args :
         std::vector<std::vector<std::string>>{{"status", "job-000001"}, {"list"}}) {
      const auto start = Clock::now();
      const int code = run_bounded_accumctl(daemon, 60, args, &output);
      const double took = seconds_since(start);
      EXPECT_EQ(code, 3) << args[0] << ": " << output;
      EXPECT_NE(output.find(absl::StrCat("accumd at ", daemon.address(),
                                         " accepted the connection but did not answer within")),
                std::string::npos)
          << args[0] << ": " << output;
      EXPECT_NE(output.find("it may be stopped (SIGSTOP) or overloaded"), std::string::npos)
          << output;
      EXPECT_EQ(output.find("is it running?"), std::string::npos) << output;
      EXPECT_LT(took, 40) << args[0] << " took " << took << " s";
    }
  }
  // Running again, it answers as before.
  EXPECT_EQ(run_accumctl(daemon, {"list"}, &output), 0) << output;
  // Nothing listening: refused, and said so without a wait.
  daemon.kill9();
  const auto start = Clock::now();
  EXPECT_EQ(run_bounded_accumctl(daemon, 60, {"list"}, &output), 3) << output;
  EXPECT_NE(output.find("cannot reach accumd at " + daemon.address()), std::string::npos) << output;
  EXPECT_EQ(output.find("accepted the connection"), std::string::npos) << output;
  EXPECT_LT(seconds_since(start), 15);
}

}  // namespace
}  // namespace accum::testing
