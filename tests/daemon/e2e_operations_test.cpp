// tests/daemon/e2e_operations_test.cpp — what the operator of a long-lived accumd meets:
// signals sent to the daemon itself (a closed terminal's SIGHUP, a `kill -HUP` meant as
// "reload") must not end it; a token file other users can read is warned about; a job
// database of a newer accumd is refused, not written; ended
// jobs are deleted with their folders (the state dir would otherwise only grow), never an
// active one or the checkpoint an active job starts from, and a delete cut short by a
// crash is finished or undone at the next start.
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

grpc::Status delete_job(DaemonHarness& daemon, const std::string& id,
                        accum::v1::DeleteJobResponse* response) {
  accum::v1::DeleteJobRequest request;
  request.set_id(id);
  auto context = daemon.context();
  return daemon.stub().DeleteJob(context.get(), request, response);
}

// A job run to its end (checkpoints every 2 steps); its status.
JobStatus run_to_end(DaemonHarness& daemon, const std::string& name) {
  JobStatus job;
  const grpc::Status submitted = daemon.submit(daemon.spec_json(name, 4, 1, 2), &job);
  EXPECT_TRUE(submitted.ok()) << submitted.error_message();
  job = daemon.wait_for(job.id(), ended);
  EXPECT_EQ(job.state(), accum::v1::SUCCEEDED) << job.message();
  return job;
}

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

// An operator who goes back to an older accumd after a newer one changed the job database's
// schema: the old one must not write a database it does not know. It exits 2 at start,
// naming both versions, and leaves the database (and so every job record) as it was.
TEST(DaemonOperations, JobDatabaseOfANewerAccumdIsRefusedAtStart) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(1)));
  const JobStatus job = run_to_end(daemon, "kept");
  daemon.stop();
  const std::string state_dir = daemon.dir() + "/state";
  const std::string sql = "python3 -c \"import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); ";
  std::string output;
  ASSERT_EQ(run_command(sql + "db.execute('PRAGMA user_version = 7'); db.commit()\" '" + state_dir +
                            "/accumd.db'",
                        &output),
            0)
      << output;
  const int exit_code =
      run_command("timeout 20 " + daemon.build_dir() + "/bin/accumd --listen 127.0.0.1:0 " +
                      "--state-dir '" + state_dir + "' --token-file '" + daemon.token_file() + "'",
                  &output);
  EXPECT_EQ(exit_code, 2) << output;
  EXPECT_NE(output.find(state_dir + "/accumd.db has schema version 7, newer than this accumd's"),
            std::string::npos)
      << output;
  std::string rows;
  ASSERT_EQ(run_command(sql +
                            "print(db.execute('PRAGMA user_version').fetchone()[0], "
                            "db.execute('SELECT id FROM jobs').fetchall())\" '" +
                            state_dir + "/accumd.db'",
                        &rows),
            0)
      << rows;
  EXPECT_EQ(rows, "7 [('" + job.id() + "',)]\n");
}

// An ended job goes with its record and its folder, durably (across an accumd restart), and
// its id is never handed out again.
TEST(DaemonDeleteJob, AnEndedJobGoesWithItsFolderAndItsIdIsNotReused) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(1)));
  const JobStatus done = run_to_end(daemon, "old");
  const JobStatus kept = run_to_end(daemon, "kept");
  ASSERT_TRUE(fs::exists(done.job_dir() + "/checkpoints/step_00000004/manifest.json"));

  std::string output;
  ASSERT_EQ(run_accumctl(daemon, {"delete", done.id()}, &output), 0) << output;
  EXPECT_NE(output.find(absl::StrCat("deleted ", done.id(), ": removed ", done.job_dir())),
            std::string::npos)
      << output;
  EXPECT_FALSE(fs::exists(done.job_dir()));
  EXPECT_TRUE(fs::exists(kept.job_dir() + "/checkpoints/step_00000004/manifest.json"));
  auto context = daemon.context();
  accum::v1::GetJobRequest get;
  get.set_id(done.id());
  JobStatus gone;
  EXPECT_EQ(daemon.stub().GetJob(context.get(), get, &gone).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(run_accumctl(daemon, {"delete", done.id()}, &output), 6) << output;
  EXPECT_EQ(run_accumctl(daemon, {"status", kept.id()}, &output), 0) << output;

  daemon.stop();
  ASSERT_TRUE(daemon.start(with_slots(1)));
  ASSERT_EQ(run_accumctl(daemon, {"list"}, &output), 0) << output;
  EXPECT_EQ(output.find(done.id()), std::string::npos) << output;
  EXPECT_NE(output.find(kept.id()), std::string::npos) << output;
  const JobStatus next = run_to_end(daemon, "next");
  EXPECT_NE(next.id(), done.id());
  EXPECT_NE(next.id(), kept.id());
}

// A running job is refused (the folder its workers write stays), and so is an ended job
// whose checkpoint an active job starts from until it has one of its own.
TEST(DaemonDeleteJob, ActiveJobsAndTheCheckpointAnActiveJobStartsFromAreKept) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(1)));
  const JobStatus source = run_to_end(daemon, "source");
  JobStatus busy;
  ASSERT_TRUE(daemon.submit(daemon.spec_json("busy", 100000, 1, 0), &busy).ok());
  ASSERT_EQ(daemon.wait_running(busy.id(), 1).state(), accum::v1::RUNNING);
  accum::v1::DeleteJobResponse response;
  grpc::Status status = delete_job(daemon, busy.id(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(status.error_message().find("cancel it first"), std::string::npos)
      << status.error_message();
  std::string output;
  EXPECT_EQ(run_accumctl(daemon, {"delete", busy.id()}, &output), 7) << output;
  EXPECT_TRUE(fs::exists(busy.job_dir() + "/spec.json"));

  // Seeded from source's step 2; queued behind `busy`, so it has no checkpoint of its own.
  const std::string seed = source.job_dir() + "/checkpoints/step_00000002";
  std::string spec = daemon.spec_json("seeded", 20, 1, 0);
  const std::string keep = "\"keep_last\": 0}";
  spec.replace(spec.find(keep), keep.size(),
               absl::StrCat("\"keep_last\": 0, \"resume_from\": \"", seed, "\"}"));
  JobStatus seeded;
  ASSERT_TRUE(daemon.submit(spec, &seeded).ok());
  status = delete_job(daemon, source.id(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(status.error_message().find(seeded.id()), std::string::npos) << status.error_message();
  EXPECT_NE(status.error_message().find(seed), std::string::npos) << status.error_message();
  EXPECT_TRUE(fs::exists(seed + "/manifest.json"));

  // Once neither is active, both go.
  EXPECT_EQ(run_accumctl(daemon, {"cancel", seeded.id()}, &output), 0) << output;
  EXPECT_EQ(run_accumctl(daemon, {"cancel", "--force", busy.id()}, &output), 0) << output;
  ASSERT_EQ(daemon.wait_for(busy.id(), ended).state(), accum::v1::CANCELLED);
  status = delete_job(daemon, source.id(), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.job_dir(), source.job_dir());
  EXPECT_GT(response.bytes_freed(), 0);
  EXPECT_TRUE(delete_job(daemon, busy.id(), &response).ok());
  EXPECT_FALSE(fs::exists(source.job_dir()));
  EXPECT_FALSE(fs::exists(busy.job_dir()));
}

// A delete moves the folder aside, drops the record, then removes the folder. An accumd that
// died after the move but before the record went finds the record: the folder is put back.
// One that died after the record went finishes removing the folder.
TEST(DaemonDeleteJob, AnInterruptedDeleteIsFinishedOrUndoneAtTheNextStart) {
  DaemonHarness daemon;
  ASSERT_TRUE(daemon.start(with_slots(1)));
  const JobStatus job = run_to_end(daemon, "interrupted");
  daemon.kill9();
  const fs::path jobs = fs::path(job.job_dir()).parent_path();
  fs::rename(job.job_dir(), jobs / (".deleting-" + job.id()));
  const fs::path orphan = jobs / ".deleting-job-999999";
  fs::create_directories(orphan / "checkpoints");
  std::ofstream(orphan / "checkpoints" / "big") << "left by a delete whose record went";

  ASSERT_TRUE(daemon.start(with_slots(1)));
  EXPECT_TRUE(fs::exists(job.job_dir() + "/checkpoints/step_00000004/manifest.json"));
  EXPECT_FALSE(fs::exists(jobs / (".deleting-" + job.id())));
  EXPECT_FALSE(fs::exists(orphan));
  std::string output;
  ASSERT_EQ(run_accumctl(daemon, {"checkpoints", job.id()}, &output), 0) << output;
  EXPECT_NE(output.find("step_00000004"), std::string::npos) << output;
}

}  // namespace
}  // namespace accum::testing
