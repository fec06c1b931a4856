// Checkpoints in bounded host memory: writing one, resuming from one and the first
// initialization hold no second copy of the weights or Adam's moments (kernels/host_staging.h).
// On the CPU back end the weights ARE host memory, so a copy would show as resident set:
// 12 bytes per parameter while a checkpoint is written, about twice that while it is read.
// Here the model has 28.4M parameters (a copy of the weights alone is 114 MB) and tiny
// activations, and the worker's peak resident set (its rusage) is set against the memory
// arithmetic it prints. (Every run writes a final checkpoint.)
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <regex>
#include <string>
#include <vector>

#include "tests/worker/worker_errors_fixture.h"
#include "tests/worker/worker_test_util.h"

namespace accum::testing {
namespace {

struct PeakRun {
  int exit_code = -1;
  long peak_kb = 0;  // ru_maxrss of the worker
  std::string output;
};

// The worker on `spec` (GOMP_SPINCOUNT set, so it does not re-exec itself for it), waited for
// with wait4 to read its peak resident set.
PeakRun run_measured(const std::string& spec, const std::string& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    const std::string worker = worker_binary();
    execlp("env", "env", "GOMP_SPINCOUNT=10000", "OMP_NUM_THREADS=1", worker.c_str(), "--spec",
           spec.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  PeakRun run;
  int status = 0;
  rusage usage{};
  if (wait4(pid, &status, 0, &usage) == pid && WIFEXITED(status)) {
    run.exit_code = WEXITSTATUS(status);
  }
  run.peak_kb = usage.ru_maxrss;
  run.output = read_file(log);
  return run;
}

// The total of the worker's "memory: ... = X MB" line, in kB (1000 bytes, as it prints).
double plan_kb(const std::string& output) {
  std::smatch match;
  if (!std::regex_search(output, match, std::regex(R"(memory: .* = ([0-9.]+) (MB|GB))"))) {
    ADD_FAILURE() << "no memory line in:\n" << output;
    return 0;
  }
  return std::stod(match[1]) * (match[2] == "GB" ? 1e6 : 1e3);
}

class CheckpointMemoryTest : public WorkerErrorsTest {};

// A worker's peak resident set is its memory line (weights, gradients, Adam's moments, one
// micro-batch's activations) plus the process itself (libraries, 16 MiB pieces, the allocator):
// initializing, writing the final checkpoint and resuming from it add no copy of the state.
TEST_F(CheckpointMemoryTest, InitCheckpointAndResumeStayWithinTheMemoryLine) {
  // 4 layers of d_model 768: 28.4M parameters; vocab 256 and 2 x 16 tokens per micro-batch.
  const std::map<std::string, std::string> model = {{"model.n_layer", "4"},
                                                    {"model.d_model", "768"},
                                                    {"model.n_head", "12"},
                                                    {"batch.tokens_per_update", "32"},
                                                    {"max_steps", "2"}};
  auto with = [&](std::map<std::string, std::string> extra) {
    extra.insert(model.begin(), model.end());
    return tiny_spec_json(extra);
  };
  constexpr double kCopyOfTheWeightsKb = 28.4e6 * 4 / 1024;  // what any copy would add, at least
  constexpr double kProcessKb = 48 * 1024;  // libraries, pieces, allocator: 20-35 MB measured

  // Random initialization, 2 steps, the final checkpoint.
  write_file(dir_ / "train.json", with({}));
  const PeakRun trained = run_measured(dir_ / "train.json", dir_ / "train.log");
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  ASSERT_TRUE(std::filesystem::exists(dir_ / "ckpt/step_00000002/model.safetensors"));
  const double line = plan_kb(trained.output) * 1000 / 1024;
  EXPECT_LT(trained.peak_kb, line + kProcessKb)
      << "the memory line says " << line << " kB; a copy of the weights alone is "
      << kCopyOfTheWeightsKb << " kB";

  // Resumed from that checkpoint: reads it, trains a step, writes another.
  write_file(dir_ / "resume.json",
             with({{"max_steps", "3"}, {"checkpoint.resume_from", "\"latest\""}}));
  const PeakRun resumed = run_measured(dir_ / "resume.json", dir_ / "resume.log");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  ASSERT_NE(resumed.output.find("step 3/3"), std::string::npos) << resumed.output;
  ASSERT_TRUE(std::filesystem::exists(dir_ / "ckpt/step_00000003/model.safetensors"));
  EXPECT_LT(resumed.peak_kb, line + kProcessKb)
      << "the memory line says " << line << " kB; a copy of the weights alone is "
      << kCopyOfTheWeightsKb << " kB";
}

}  // namespace
}  // namespace accum::testing
