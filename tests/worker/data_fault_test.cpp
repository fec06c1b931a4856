// tests/worker/data_fault_test.cpp — a data file truncated under a training worker: the
// worker maps data files, so the next read past the new end raises SIGBUS. It must end
// with a line naming the file and the runtime-failure exit code (1, which accumd answers
// with a restart from the last checkpoint), not die by the signal with no word.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "tests/worker/worker_test_util.h"

namespace accum::testing {
namespace {

TEST(DataFaultTest, DataFileTruncatedWhileTrainingIsNamedAndExitsAsARuntimeFailure) {
  TempDir dir;
  const std::string corpus = dir / "corpus.txt";
  write_file(corpus, make_corpus(40000));
  write_file(dir / "job.json", tiny_spec_json({{"max_steps", "1000000"}}));
  const pid_t worker = spawn({worker_binary(), "--spec", dir / "job.json"}, dir / "worker.log");
  // Truncate once it trains (a few metrics lines): its reads are still in the first page,
  // and move on past it within a few dozen steps.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (read_metrics(dir / "metrics.jsonl").size() < 3) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << read_file(dir / "worker.log");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(::truncate(corpus.c_str(), 100), 0);
  const int exit_code = wait_exit(worker, 120);
  const std::string output = read_file(dir / "worker.log");
  EXPECT_EQ(exit_code, 1) << output;
  EXPECT_NE(output.find(corpus + " shrank while the worker had it memory-mapped"),
            std::string::npos)
      << output;
  EXPECT_NE(output.find("SIGBUS"), std::string::npos) << output;
  EXPECT_NE(output.find("Exiting with code 1 (runtime failure)"), std::string::npos) << output;
}

}  // namespace
}  // namespace accum::testing
