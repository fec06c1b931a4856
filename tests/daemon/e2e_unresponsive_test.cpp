// tests/daemon/e2e_unresponsive_test.cpp — an accumd that is there but does not answer
// (stopped with SIGSTOP: its port still accepts TCP connections, the kernel completes the
// handshake) must not be reported as absent, and must not hold a watch or a logs -f forever;
// and the keepalive that ends those streams must not end a healthy stream that is merely
// quiet for a long time.
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

// accumd with a "worker" that never connects back: its job stays STARTING (for
// --hello-timeout-s, 300 s), so a watch or logs -f on it is open and carries nothing.
DaemonOptions with_silent_worker(const DaemonHarness& daemon) {
  const std::string worker = daemon.dir() + "/silent-worker.sh";
  std::ofstream(worker) << "#!/bin/sh\nwhile :; do sleep 1; done\n";
  std::filesystem::permissions(worker, std::filesystem::perms::owner_all);
  DaemonOptions options = with_slots(1);
  options.extra_args = {"--worker-bin", worker};
  return options;
}

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

// A watch and a logs -f open on a quiet job (no event for a while: keepalive pings have gone
// unanswered by data more than twice) when accumd is stopped: keepalive (1 s, 2 s timeout)
// ends both, after --reconnect-s 3, with exit 3 and a message that names accumd's address
// and says it stopped answering. Without keepalive they block until the kill at 90 s.
TEST(DaemonUnresponsive, WatchAndLogsFollowEndWhenAccumdStopsAnswering) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_silent_worker(daemon)));
  JobStatus job;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("quiet", 5, 1, 0), &job).ok());
  const std::vector<std::string> keepalive = {"--keepalive-s", "1", "--keepalive-timeout-s", "2",
                                              "--reconnect-s", "3"};
  std::atomic<bool> watch_printed{false};
  std::string watch_output, follow_output;
  auto args_of = [&](std::vector<std::string> verb) {
    verb.insert(verb.end(), keepalive.begin(), keepalive.end());
    return verb;
  };
  auto watch_exit = std::async(std::launch::async, [&] {
    return run_bounded_accumctl(daemon, 90, args_of({"watch", job.id()}), &watch_output,
                                &watch_printed);
  });
  auto follow_exit = std::async(std::launch::async, [&] {
    return run_bounded_accumctl(daemon, 90, args_of({"logs", job.id(), "-f"}), &follow_output);
  });
  // Both streams open and quiet for several keepalive intervals.
  for (int i = 0; i < 200 && !watch_printed.load(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::this_thread::sleep_for(std::chrono::seconds(5));
  ASSERT_EQ(watch_exit.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "watch ended before accumd was stopped:\n"
      << watch_output;
  ASSERT_EQ(follow_exit.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "logs -f ended before accumd was stopped:\n"
      << follow_output;
  StoppedDaemon stopped(daemon);
  const auto start = Clock::now();
  const int watch_code = watch_exit.get();
  const int follow_code = follow_exit.get();
  const double took = seconds_since(start);
  for (const auto& [what, code, output] :
       {std::tuple<std::string, int, std::string>{"watch", watch_code, watch_output},
        {"logs -f", follow_code, follow_output}}) {
    EXPECT_EQ(code, 3) << what << ":\n" << output;
    EXPECT_NE(output.find(absl::StrCat("accumd at ", daemon.address())), std::string::npos)
        << what << ":\n"
        << output;
    EXPECT_NE(output.find("stopped answering (no reply to a keepalive ping within 2 s)"),
              std::string::npos)
        << what << ":\n"
        << output;
  }
  EXPECT_LT(took, 30) << "the streams ended " << took << " s after accumd was stopped";
}

// The server side of keepalive: a watch and a logs -f that carry nothing for many ping
// intervals (1 s) stay open. gRPC's server defaults take such pings as abuse and close the
// connection (GOAWAY "too_many_pings") after the third; with --reconnect-s 0 the client
// would exit 3 then. Cancelling the job ends the watch as usual (exit 1).
TEST(DaemonUnresponsive, AQuietWatchIsNotEndedByKeepalive) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_silent_worker(daemon)));
  JobStatus job;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("quiet", 5, 1, 0), &job).ok());
  const std::vector<std::string> keepalive = {"--keepalive-s", "1", "--keepalive-timeout-s", "2",
                                              "--reconnect-s", "0"};
  std::string watch_output, follow_output;
  auto args_of = [&](std::vector<std::string> verb) {
    verb.insert(verb.end(), keepalive.begin(), keepalive.end());
    return verb;
  };
  auto watch_exit = std::async(std::launch::async, [&] {
    return run_bounded_accumctl(daemon, 120, args_of({"watch", job.id()}), &watch_output);
  });
  auto follow_exit = std::async(std::launch::async, [&] {
    return run_bounded_accumctl(daemon, 120, args_of({"logs", job.id(), "-f"}), &follow_output);
  });
  std::this_thread::sleep_for(std::chrono::seconds(10));
  EXPECT_EQ(watch_exit.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "a quiet watch ended:\n"
      << watch_output;
  EXPECT_EQ(follow_exit.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "a quiet logs -f ended:\n"
      << follow_output;
  ASSERT_TRUE(daemon.cancel(job.id(), /*force=*/true).ok());
  EXPECT_EQ(watch_exit.get(), 1) << watch_output;
  EXPECT_EQ(follow_exit.get(), 0) << follow_output;
  EXPECT_EQ(watch_output.find("lost accumd"), std::string::npos) << watch_output;
  EXPECT_NE(watch_output.find("CANCELLED"), std::string::npos) << watch_output;
}

}  // namespace
}  // namespace accum::testing
