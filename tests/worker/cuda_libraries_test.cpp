// The CUDA-enabled worker opens cuBLASLt only for a CUDA job (kernels/cuda/cublaslt_loader.h):
// a CPU job never maps it (it would cost every CPU rank about 150 MB resident, and a host
// without cuBLASLt could not run CPU jobs), and a CUDA job whose cuBLASLt cannot be
// loaded is refused with the library's name and what to do. The dynamic loader's own log
// (LD_DEBUG=files) says which libraries a process opened, dlopen included. No GPU needed.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "tests/worker/worker_errors_fixture.h"
#include "tests/worker/worker_test_util.h"

namespace accum::testing {
namespace {

constexpr char kNoCudaBuild[] = "this build has no CUDA back end";

class WorkerCudaLibrariesTest : public WorkerErrorsTest {
 protected:
  // Runs the worker on `spec_json` under `env` (NAME=VALUE words for env(1)) with the dynamic
  // loader logging every library it opens; returns the run and (in *opened) that log.
  RunResult run_logged(const std::string& spec_json, const std::vector<std::string>& env,
                       std::string* opened) {
    write_file(dir_ / "job.json", spec_json);
    const std::string log_prefix = dir_ / ("ld-" + std::to_string(++runs_));
    std::vector<std::string> argv = {"env", "LD_DEBUG=files", "LD_DEBUG_OUTPUT=" + log_prefix};
    argv.insert(argv.end(), env.begin(), env.end());
    argv.insert(argv.end(), {worker_binary(), "--spec", dir_ / "job.json"});
    RunResult result = run(argv);
    opened->clear();
    for (const auto& entry : std::filesystem::directory_iterator(dir_.path())) {
      // LD_DEBUG_OUTPUT=P writes P.<pid>, one file per process.
      if (entry.path().filename().string().rfind("ld-" + std::to_string(runs_) + ".", 0) == 0) {
        *opened += read_file(entry.path());
      }
    }
    return result;
  }

  int runs_ = 0;
};

TEST_F(WorkerCudaLibrariesTest, CpuJobNeverOpensCuBlasLtAndCudaJobDoes) {
  std::string opened;
  const RunResult cpu = run_logged(tiny_spec_json({{"max_steps", "2"}}), {}, &opened);
  ASSERT_EQ(cpu.exit_code, 0) << cpu.output;
  ASSERT_NE(opened.find("libopenblas"), std::string::npos)
      << "the loader's log names no library at all, so it proves nothing:\n"
      << opened;
  EXPECT_EQ(opened.find("libcublasLt"), std::string::npos) << "a CPU job opened cuBLASLt:\n"
                                                           << opened;

  // The same worker on a CUDA job opens it (then trains on a GPU, or, without one, stops at
  // "no CUDA device visible"): the log above would have shown it.
  const RunResult cuda = run_logged(
      tiny_spec_json({{"max_steps", "2"}, {"device", "\"CUDA\""}, {"precision", "\"BF16\""}}), {},
      &opened);
  if (cuda.output.find(kNoCudaBuild) != std::string::npos) GTEST_SKIP() << cuda.output;
  EXPECT_NE(opened.find("libcublasLt"), std::string::npos) << "a CUDA job did not open cuBLASLt:\n"
                                                           << cuda.output << "\n"
                                                           << opened;
}

TEST_F(WorkerCudaLibrariesTest, CudaJobWhoseCuBlasLtCannotBeLoadedIsRefusedNamingIt) {
  const std::string spec =
      tiny_spec_json({{"max_steps", "2"}, {"device", "\"CUDA\""}, {"precision", "\"BF16\""}});
  std::string opened;
  const std::string missing = dir_ / "no-such-dir/libcublasLt.so.13";
  RunResult result = run_logged(spec, {"ACCUM_CUBLASLT_LIBRARY=" + missing}, &opened);
  if (result.output.find(kNoCudaBuild) != std::string::npos) GTEST_SKIP() << result.output;
  EXPECT_EQ(result.exit_code, 2) << result.output;
  for (const std::string& word :
       {std::string("CUDA back end unavailable"), std::string("cannot load cuBLASLt (") + missing,
        std::string("No such file"), std::string("LD_LIBRARY_PATH"),
        std::string("ACCUM_CUBLASLT_LIBRARY")}) {
    EXPECT_NE(result.output.find(word), std::string::npos) << word << ":\n" << result.output;
  }
  if (std::filesystem::exists(dir_ / "ckpt")) {  // made (with its .lock) when the spec was checked
    for (const auto& entry : std::filesystem::directory_iterator(dir_ / "ckpt")) {
      EXPECT_EQ(entry.path().filename(), ".lock") << "a refused job wrote " << entry.path();
    }
  }

  // A library that is not cuBLASLt: every function it lacks is named.
  result = run_logged(spec, {"ACCUM_CUBLASLT_LIBRARY=libc.so.6"}, &opened);
  EXPECT_EQ(result.exit_code, 2) << result.output;
  for (const char* word :
       {"cannot use libc.so.6 as cuBLASLt", "cublasLtCreate", "cublasLtMatmul,"}) {
    EXPECT_NE(result.output.find(word), std::string::npos) << word << ":\n" << result.output;
  }
}

}  // namespace
}  // namespace accum::testing
