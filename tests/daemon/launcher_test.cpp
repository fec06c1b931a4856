// tests/daemon/launcher_test.cpp — command lines (pure) and process
// supervision with real processes (a shell stands in for the worker).
#include "daemon/control/launcher.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_join.h"
#include "daemon/control/job_files.h"
#include "daemon/control/process.h"
#include "daemon/spec/spec.h"
#include "gtest/gtest.h"
#include "tests/common/scratch_tmpfs.h"

namespace accum::control {
namespace {

bool contains(const std::vector<std::string>& argv, const std::string& arg) {
  return std::find(argv.begin(), argv.end(), arg) != argv.end();
}

TEST(Launcher, SingleProcessRunsTheWorkerDirectly) {
  LauncherConfig config;
  config.worker_binary = "/opt/accum-worker";
  config.control_addr = "127.0.0.1:5000";
  LaunchInfo job;
  job.id = "job-000007";
  job.job_dir = "/state/jobs/job-000007";
  job.attempt = 2;
  const auto request = build_launch(config, job);
  EXPECT_EQ(request.argv, (std::vector<std::string>{"/opt/accum-worker", "--spec",
                                                    "/state/jobs/job-000007/spec.json"}));
  EXPECT_EQ(request.env.at("ACCUM_JOB_ID"), "job-000007");
  EXPECT_EQ(request.env.at("ACCUM_ATTEMPT"), "2");
  EXPECT_EQ(request.env.at("ACCUM_CONTROL_ADDR"), "127.0.0.1:5000");
  EXPECT_EQ(request.env.at("ACCUM_JOB_DIR"), "/state/jobs/job-000007");  // the stray-finding tag
  EXPECT_EQ(request.env.count("ACCUM_TOKEN_FILE"), 0u);
  EXPECT_EQ(request.stdout_path, "/state/jobs/job-000007/logs/attempt-2/1/rank.0/stdout");
  EXPECT_EQ(request.exit_code_path, "/state/jobs/job-000007/logs/attempt-2/exit_code");
}

// Every rank gets a short OpenMP spin (GOMP_SPINCOUNT=10000; forwarded to remote ranks),
// unless the daemon itself was started with GOMP_SPINCOUNT or OMP_WAIT_POLICY: then the
// ranks inherit that choice and the launcher sets nothing.
TEST(Launcher, RanksGetAShortOpenMpSpinUnlessTheDaemonWasGivenAPolicy) {
  LaunchInfo job;
  job.job_dir = "/s/j";
  job.world_size = 2;
  const char* saved_spin = std::getenv("GOMP_SPINCOUNT");
  const char* saved_policy = std::getenv("OMP_WAIT_POLICY");
  const std::string spin = saved_spin ? saved_spin : "", policy = saved_policy ? saved_policy : "";
  unsetenv("GOMP_SPINCOUNT");
  unsetenv("OMP_WAIT_POLICY");
  {
    const LauncherConfig config;
    EXPECT_EQ(config.gomp_spincount, "10000");
    const auto request = build_launch(config, job);
    EXPECT_EQ(request.env.at("GOMP_SPINCOUNT"), "10000");
    const auto x = std::find(request.argv.begin(), request.argv.end(), "GOMP_SPINCOUNT");
    ASSERT_TRUE(x != request.argv.end()) << "GOMP_SPINCOUNT is not forwarded to remote ranks";
    EXPECT_EQ(*(x - 1), "-x");
    LaunchInfo alone = job;
    alone.world_size = 1;
    EXPECT_EQ(build_launch(config, alone).env.at("GOMP_SPINCOUNT"), "10000");
  }
  for (const char* name : {"GOMP_SPINCOUNT", "OMP_WAIT_POLICY"}) {
    setenv(name, "active", 1);
    const LauncherConfig config;
    EXPECT_EQ(config.gomp_spincount, "") << name;
    const auto request = build_launch(config, job);
    EXPECT_EQ(request.env.count("GOMP_SPINCOUNT"), 0u) << name;
    EXPECT_FALSE(contains(request.argv, "GOMP_SPINCOUNT")) << name;
    unsetenv(name);
  }
  if (saved_spin) setenv("GOMP_SPINCOUNT", spin.c_str(), 1);
  if (saved_policy) setenv("OMP_WAIT_POLICY", policy.c_str(), 1);
}

TEST(Launcher, MpirunLineHasRanksRootOversubscribeHostfileAndArgs) {
  LauncherConfig config;
  config.worker_binary = "accum-worker";
  config.cores = 2;
  config.running_as_root = true;
  config.token_file = "/etc/accumd/token";
  config.mpirun_args = {"--mca", "btl", "self,vader"};
  LaunchInfo job;
  job.id = "job-000001";
  job.job_dir = "/s/j";
  job.world_size = 4;
  job.attempt = 1;
  job.launch.set_hostfile("/etc/hosts.mpi");
  job.launch.add_mpirun_args("--bind-to");
  job.launch.add_mpirun_args("none");
  const auto argv = build_launch(config, job).argv;
  ASSERT_GE(argv.size(), 3u);
  EXPECT_EQ(argv[0], "mpirun");
  EXPECT_EQ(argv[1], "-np");
  EXPECT_EQ(argv[2], "4");
  EXPECT_TRUE(contains(argv, "--allow-run-as-root"));
  EXPECT_TRUE(contains(argv, "--oversubscribe"));  // 4 ranks > 2 cores
  EXPECT_TRUE(contains(argv, "/etc/hosts.mpi"));
  EXPECT_TRUE(contains(argv, "self,vader"));
  EXPECT_TRUE(contains(argv, "--bind-to"));
  EXPECT_TRUE(contains(argv, "ACCUM_TOKEN_FILE"));  // forwarded with -x
  EXPECT_TRUE(contains(argv, "/s/j/logs/attempt-1"));
  EXPECT_EQ(argv[argv.size() - 3], "accum-worker");
  EXPECT_EQ(argv.back(), "/s/j/spec.json");

  config.running_as_root = false;
  config.cores = 8;
  LaunchInfo two;
  two.job_dir = "/s/j";
  two.world_size = 2;
  const auto small = build_launch(config, two).argv;
  EXPECT_FALSE(contains(small, "--allow-run-as-root"));
  EXPECT_FALSE(contains(small, "--oversubscribe"));
}

accum::v1::LaunchSpec launch_with(const std::vector<std::string>& args) {
  accum::v1::LaunchSpec launch;
  for (const auto& arg : args) launch.add_mpirun_args(arg);
  return launch;
}

TEST(Launcher, JobMpirunArgsAcceptMpirunOptions) {
  const std::vector<std::vector<std::string>> accepted = {
      {},
      {"--bind-to", "none"},
      {"--map-by", "ppr:4:node", "--rank-by", "slot", "--report-bindings"},
      {"--mca", "btl", "self,vader", "--mca", "btl_tcp_if_include", "eth0"},
      {"-mca", "pml", "ob1", "--mca", "coll_hcoll_enable", "0"},
      {"-x", "NCCL_DEBUG=INFO", "-x", "OMP_NUM_THREADS", "-x", "CUDA_VISIBLE_DEVICES=0,1"},
      {"--tag-output", "--timestamp-output", "--display-map", "--display-allocation"},
  };
  for (const auto& args : accepted) {
    const auto status = check_job_mpirun_args(launch_with(args));
    EXPECT_TRUE(status.ok()) << absl::StrJoin(args, " ") << ": " << status.message();
  }
}

// Each of these would run another program as accumd's user, start more ranks than the
// job's slots, or take over what accumd sets itself.
TEST(Launcher, JobMpirunArgsRefuseProgramsLaunchOptionsAndLoaders) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> refused = {
      {{"/bin/sh", "-c", "id > /tmp/owned"},
       "launch.mpirun_args[0]: '/bin/sh' is not an option (a program or its argument)"},
      {{"--bind-to", "none", "hostname"}, "launch.mpirun_args[2]: 'hostname' is not an option"},
      {{"-np", "2"}, "launch.mpirun_args[0]: '-np' is not allowed here"},
      {{"--host", "a,b"}, "launch.mpirun_args[0]: '--host' is not allowed here"},
      {{"--hostfile", "h"}, "'--hostfile' is not allowed here"},
      {{"--launch-agent", "/tmp/x"}, "'--launch-agent' is not allowed here"},
      {{"--prefix", "/tmp"}, "'--prefix' is not allowed here"},
      {{"--definitely-not-a-flag"}, "'--definitely-not-a-flag' is not allowed here"},
      {{"--mca", "plm_rsh_agent", "/bin/sh"},
       "launch.mpirun_args[1]: 'plm_rsh_agent' is not an MCA parameter a job may set"},
      {{"--mca", "orte_launch_agent", "x"}, "'orte_launch_agent' is not an MCA parameter"},
      {{"--mca", "btl"}, "launch.mpirun_args[0]: '--mca' needs a parameter name and a value"},
      {{"-x", "LD_PRELOAD=/tmp/evil.so"},
       "launch.mpirun_args[1]: 'LD_PRELOAD=/tmp/evil.so' is not an environment variable"},
      {{"-x", "PATH=/tmp"}, "'PATH=/tmp' is not an environment variable a job may set"},
      {{"-x", "NCCL_NET_PLUGIN=/tmp/p.so"}, "'NCCL_NET_PLUGIN=/tmp/p.so' is not an environment"},
      {{"-x", "OMP_TOOL_LIBRARIES=/tmp/t.so"}, "is not an environment variable"},
      {{"-x"}, "launch.mpirun_args[0]: '-x' needs NAME or NAME=VALUE"},
      {{"--map-by"}, "'--map-by' needs a value"},
  };
  for (const auto& [args, expected] : refused) {
    const auto status = check_job_mpirun_args(launch_with(args));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << absl::StrJoin(args, " ");
    EXPECT_NE(std::string(status.message()).find(expected), std::string::npos)
        << absl::StrJoin(args, " ") << ": " << status.message();
    EXPECT_NE(std::string(status.message()).find("expected mpirun options only: --mca NAME VALUE"),
              std::string::npos)
        << status.message();
  }
}

class ProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/process-test-XXXXXX";
    dir_ = mkdtemp(pattern);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(ProcessTest, ExitCodeIsRecordedAndLogsCaptured) {
  SpawnRequest request;
  request.argv = {"/bin/sh", "-c", "echo out-line; echo err-line >&2; echo $ACCUM_JOB_ID; exit 3"};
  request.env = {{"ACCUM_JOB_ID", "job-42"}};
  request.stdout_path = dir_ + "/log";
  request.exit_code_path = dir_ + "/exit_code";
  auto pid = spawn_process(request);
  ASSERT_TRUE(pid.ok()) << pid.status();
  int status = 0;
  ASSERT_EQ(waitpid(*pid, &status, 0), *pid);
  EXPECT_EQ(describe_wait_status(status), "exit code 3");
  EXPECT_EQ(read_exit_code_file(dir_ + "/exit_code"), 3);
  const auto lines = tail_lines(dir_ + "/log", 0);
  EXPECT_EQ(lines, (std::vector<std::string>{"out-line", "err-line", "job-42"}));
  EXPECT_EQ(tail_lines(dir_ + "/log", 1), (std::vector<std::string>{"job-42"}));
}

TEST_F(ProcessTest, KilledChildIsReportedAsSignalAndTreeKillReachesGrandchildren) {
  SpawnRequest request;
  // The shell starts a grandchild (sleep) and waits: a stand-in for mpirun + rank.
  request.argv = {"/bin/sh", "-c", "sleep 30; exit $?"};
  request.stdout_path = dir_ + "/log";
  request.exit_code_path = dir_ + "/exit_code";
  auto pid = spawn_process(request);
  ASSERT_TRUE(pid.ok());
  const auto ticks = process_start_ticks(*pid);
  ASSERT_TRUE(ticks.has_value());
  EXPECT_TRUE(process_alive(*pid, *ticks));
  EXPECT_FALSE(process_alive(*pid, *ticks + 1)) << "a different start time is a different process";
  std::vector<pid_t> descendants;
  for (int i = 0; i < 100 && descendants.size() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    descendants = process_descendants(*pid);
  }
  ASSERT_EQ(descendants.size(), 2u);     // sh -c, sleep
  signal_process_leaves(*pid, SIGKILL);  // kills only `sleep`
  int status = 0;
  ASSERT_EQ(waitpid(*pid, &status, 0), *pid);
  EXPECT_EQ(describe_wait_status(status), "signal 9 (Killed)");
  EXPECT_EQ(read_exit_code_file(dir_ + "/exit_code"), 128 + 9);
  EXPECT_FALSE(process_alive(*pid, *ticks));
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

accum::v1::JobSpec named_spec(const std::string& name) {
  accum::v1::JobSpec spec;
  spec.set_name(name);
  spec.mutable_data()->add_train("/data/corpus.txt");
  spec.set_max_steps(7);
  return spec;
}

TEST_F(ProcessTest, JobSpecIsWrittenWholeAndReplacedWhole) {
  ASSERT_TRUE(write_job_spec(dir_, named_spec("first")).ok());
  ASSERT_TRUE(write_job_spec(dir_, named_spec("second")).ok());
  const auto read = spec::parse_spec_json(read_text(job_spec_path(dir_)));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->SerializeAsString(), named_spec("second").SerializeAsString());
  EXPECT_FALSE(std::filesystem::exists(job_spec_path(dir_) + ".tmp"));
}

TEST_F(ProcessTest, JobSpecInAMissingFolderIsRefusedNamingThePathAndWhy) {
  const absl::Status status = write_job_spec(dir_ + "/no-such-job", named_spec("lost"));
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_NE(status.message().find(dir_ + "/no-such-job/spec.json.tmp"), std::string::npos)
      << status;
  EXPECT_NE(status.message().find(std::strerror(ENOENT)), std::string::npos) << status;
}

// A full disk: the refused write is RESOURCE_EXHAUSTED (accumctl says the disk is full and
// exits 8, not "cannot reach accumd"), names the file and the reason, the spec.json already
// there is kept as it was, and no temporary file is left behind.
TEST_F(ProcessTest, JobSpecOnAFullDiskKeepsTheOldOneAndLeavesNoTempFile) {
  const std::string job_dir = dir_ + "/disk";
  accum::testing::ScratchTmpfs disk(job_dir, 1 << 20);
  ACCUM_SKIP_UNLESS_MOUNTED(disk);
  ASSERT_TRUE(write_job_spec(job_dir, named_spec("before")).ok());
  const std::string before = read_text(job_spec_path(job_dir));
  ASSERT_GT(disk.fill("filler"), 0u);
  const absl::Status status = write_job_spec(job_dir, named_spec("after-the-disk-filled"));
  EXPECT_TRUE(absl::IsResourceExhausted(status)) << status;
  EXPECT_NE(status.message().find("the disk is full; free space and retry"), std::string::npos)
      << status;
  EXPECT_NE(status.message().find(job_dir + "/spec.json.tmp"), std::string::npos) << status;
  EXPECT_NE(status.message().find(std::strerror(ENOSPC)), std::string::npos) << status;
  EXPECT_EQ(read_text(job_spec_path(job_dir)), before);
  EXPECT_FALSE(std::filesystem::exists(job_spec_path(job_dir) + ".tmp"));
}

// A launch's processes are found by their job folder tag alone (the pid of their root is
// what a crashed accumd lost): the wrapper and its grandchild, not a job whose folder
// merely starts with the same text, and no longer once they are dead.
TEST_F(ProcessTest, ProcessesAreFoundByTheirEnvironmentTag) {
  auto spawn_tagged = [&](const std::string& job_dir) {
    SpawnRequest request;
    request.argv = {"/bin/sh", "-c", "sleep 30; exit $?"};  // sh -c, then sleep under it
    request.env = {{kJobDirEnv, job_dir}};
    request.stdout_path = dir_ + "/log";
    request.exit_code_path = dir_ + "/exit_code-" + std::to_string(job_dir.size());
    return spawn_process(request);
  };
  const std::string job_dir = dir_ + "/jobs/job-1";
  auto tagged = spawn_tagged(job_dir);
  auto other = spawn_tagged(job_dir + "0");  // job-10: the same prefix
  ASSERT_TRUE(tagged.ok() && other.ok());
  std::vector<pid_t> found;
  for (int i = 0; i < 100 && found.size() < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    found = processes_with_env(kJobDirEnv, job_dir);
  }
  std::vector<pid_t> expected = process_descendants(*tagged);
  expected.push_back(*tagged);
  std::sort(expected.begin(), expected.end());
  std::sort(found.begin(), found.end());
  EXPECT_EQ(expected.size(), 3u) << "wrapper sh, sh -c, sleep";
  EXPECT_EQ(found, expected) << "the processes tagged " << job_dir;
  for (pid_t pid : found) kill(pid, SIGKILL);
  ASSERT_EQ(waitpid(*tagged, nullptr, 0), *tagged);
  for (int i = 0; i < 100 && !processes_with_env(kJobDirEnv, job_dir).empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(processes_with_env(kJobDirEnv, job_dir).empty()) << "dead processes are not strays";
  EXPECT_FALSE(processes_with_env(kJobDirEnv, job_dir + "0").empty());
  signal_process_tree(*other, SIGKILL);
  waitpid(*other, nullptr, 0);
}

TEST_F(ProcessTest, ListsOnlyCompleteCheckpointsAndRemovesPartialOnes) {
  namespace fs = std::filesystem;
  fs::create_directories(dir_ + "/step_00000010");
  std::ofstream(dir_ + "/step_00000010/manifest.json") << "{}";
  std::ofstream(dir_ + "/step_00000010/model.safetensors") << "0123456789";
  fs::create_directories(dir_ + "/step_00000020");  // no manifest: incomplete
  fs::create_directories(dir_ + "/.tmp-step_00000030-123");
  const auto listed = list_job_checkpoints(dir_);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].step(), 10);
  EXPECT_EQ(listed[0].bytes(), 12);
  EXPECT_EQ(remove_partial_checkpoints(dir_), 1);
  EXPECT_FALSE(fs::exists(dir_ + "/.tmp-step_00000030-123"));
}

TEST_F(ProcessTest, FailureSummaryBlamesTheRankThatAbortedTheJobAndKeepsItsError) {
  namespace fs = std::filesystem;
  // Rank 1 rejected its input and ended the job with MPI_Abort; mpirun killed rank 0
  // mid-training. The reason to report is rank 1's, not rank 0's last words.
  const std::string attempt = dir_ + "/logs/attempt-1";
  fs::create_directories(attempt + "/1/rank.0");
  fs::create_directories(attempt + "/1/rank.1");
  std::ofstream(attempt + "/launcher.log")
      << "-----------------------------------------------------------------\n"
         "MPI_ABORT was invoked on rank 1 in communicator MPI_COMM_WORLD\n"
         "with errorcode 2.\n\n"
         "NOTE: invoking MPI_ABORT causes Open MPI to kill all MPI processes.\n";
  std::ofstream(attempt + "/1/rank.0/stderr") << "[12:00:00.000] [train] step 1\n";
  std::ofstream(attempt + "/1/rank.1/stderr")
      << "accum-worker: error: data file /d/val.bin: too short\n"
         "[12:00:00.001] [comm] rank 1 of 2 aborting the job at optimizer step 0: too short\n";
  const FailureSummary summary = summarize_failure(dir_, 1, 5);
  EXPECT_EQ(summary.rank, 1);
  EXPECT_EQ(summary.last_error, "data file /d/val.bin: too short");
  EXPECT_NE(summary.last_lines.find("[rank 1] accum-worker: error:"), std::string::npos)
      << summary.last_lines;
}

TEST_F(ProcessTest, FailureSummaryOfAFailureTheRanksAgreedOnKeepsRankZerosError) {
  namespace fs = std::filesystem;
  // Every rank rejected the data and exited with the bad-input code after MPI_Finalize;
  // rank 0 alone printed the error, and mpirun blames rank 3, which happened to exit first.
  const std::string attempt = dir_ + "/logs/attempt-1";
  fs::create_directories(attempt + "/1/rank.0");
  fs::create_directories(attempt + "/1/rank.3");
  std::ofstream(attempt + "/launcher.log")
      << "mpirun detected that one or more processes exited with non-zero status, thus causing\n"
         "the job to be terminated. The first process to do so was:\n\n"
         "  Process name: [[4242,1],3]\n"
         "  Exit code:    2\n";
  std::ofstream(attempt + "/1/rank.0/stderr")
      << "accum-worker: error: data.train: data path pattern '/d/*.txt' matches no file\n";
  std::ofstream(attempt + "/1/rank.3/stderr") << "";
  const FailureSummary summary = summarize_failure(dir_, 1, 5);
  EXPECT_EQ(summary.rank, 0);
  EXPECT_EQ(summary.last_error, "data.train: data path pattern '/d/*.txt' matches no file");
  EXPECT_NE(summary.last_lines.find("[rank 0] accum-worker: error:"), std::string::npos)
      << summary.last_lines;
}

}  // namespace
}  // namespace accum::control
