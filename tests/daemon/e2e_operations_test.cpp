// tests/daemon/e2e_operations_test.cpp — what the operator of a long-lived accumd meets:
// signals sent to the daemon itself (a closed terminal's SIGHUP, a `kill -HUP` meant as
// "reload") must not end it; a token file other users can read is warned about.
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/daemon/daemon_harness.h"

namespace accum::testing {
namespace {

namespace fs = std::filesystem;
using accum::v1::JobStatus;

std::string accumd_log(const DaemonHarness& daemon) {
  std::ifstream in(daemon.dir() + "/accumd.log");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// SIGHUP's default action ends a process at once, and systemd counts an end by SIGHUP as
// clean (Restart=on-failure does not restart it): the jobs would go unsupervised. accumd
// logs it and keeps serving and supervising; SIGTERM still stops it.
TEST(DaemonOperations, SighupIsIgnoredAndTheDaemonKeepsSupervising) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(1)));
  JobStatus job;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("hup", 30, 1, 0), &job).ok());
  ASSERT_EQ(daemon.wait_running(job.id(), 1).state(), accum::v1::RUNNING);

  daemon.send_signal(SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_TRUE(daemon.alive()) << "accumd ended on SIGHUP:\n" << accumd_log(daemon);
  EXPECT_NE(accumd_log(daemon).find("SIGHUP: ignored"), std::string::npos) << accumd_log(daemon);

  const JobStatus done = daemon.wait_for(job.id(), [](const JobStatus& j) {
    return j.state() == accum::v1::SUCCEEDED || j.state() == accum::v1::FAILED;
  });
  EXPECT_EQ(done.state(), accum::v1::SUCCEEDED) << done.message();
  EXPECT_EQ(done.restarts(), 0);

  daemon.send_signal(SIGTERM);
  const auto status = daemon.wait_exit(std::chrono::seconds(20));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "status " << *status;
}

size_t count_of(const std::string& text, const std::string& part) {
  size_t count = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++count;
  return count;
}

// The README's recipe (`... > /etc/accumd/token` under the usual umask 022) left the token
// readable by every user of a shared box, and accumd said nothing: anyone could then submit
// and cancel jobs as accumd's user. It warns at every start until the file is 0600.
TEST(DaemonOperations, TokenFileOthersCanReadIsWarnedAbout) {
  DaemonHarness daemon;
  fs::permissions(daemon.token_file(), fs::perms::owner_read | fs::perms::owner_write |
                                           fs::perms::group_read | fs::perms::others_read);
  ASSERT_TRUE(daemon.start(with_slots(1)));
  const std::string warning =
      absl::StrCat("--token-file ", daemon.token_file(), " is readable by other users (mode 644)");
  EXPECT_EQ(count_of(accumd_log(daemon), warning), 1u) << accumd_log(daemon);
  daemon.stop();
  fs::permissions(daemon.token_file(), fs::perms::owner_read | fs::perms::owner_write);
  ASSERT_TRUE(daemon.start(with_slots(1)));
  EXPECT_EQ(count_of(accumd_log(daemon), "readable by other users"), 1u) << accumd_log(daemon);
}

}  // namespace
}  // namespace accum::testing
