// tests/worker/metrics_test.cpp — the metrics file holds whole lines only: a resumed run
// cuts it back to its step (and an unfinished last line) without rewriting the lines it
// keeps, and a line a full disk cuts short is dropped whole, with a warning, while training
// (the writer) goes on.
#include "daemon/worker/train/metrics.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/common/scratch_tmpfs.h"
#include "tests/common/temp_dir.h"

namespace accum::train {
namespace {

using accum::testing::ScratchTmpfs;
using accum::testing::TempDir;

accum::v1::StepMetrics step_metrics(int64_t step) {
  accum::v1::StepMetrics m;
  m.set_step(step);
  m.set_loss(5.5 - 0.01 * static_cast<double>(step));
  m.set_max_steps(1000000);
  return m;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The steps of the file's lines, in order; -1 for a line that is not one whole JSON object.
std::vector<int64_t> steps_in(const std::string& path) {
  std::vector<int64_t> steps;
  const std::string text = read_all(path);
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    const std::string line = text.substr(start, end == std::string::npos ? end : end - start);
    const bool whole = end != std::string::npos && line.rfind("{\"step\":", 0) == 0 &&
                       line.back() == '}' && line.find('{', 1) == std::string::npos;
    steps.push_back(whole ? std::atoll(line.c_str() + 8) : -1);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return steps;
}

TEST(MetricsSink, ResumeCutsBackToTheStepAndAnUnfinishedLine) {
  TempDir dir;
  const std::string path = dir / "metrics.jsonl";
  {
    std::ofstream out(path, std::ios::binary);
    for (int64_t step = 1; step <= 5; ++step) out << metrics_json(step_metrics(step)) << "\n";
    out << "{\"step\":6,\"loss\":5.4";  // the run was killed mid-line
  }
  const std::string first_three = [&] {
    std::string text = read_all(path);
    size_t at = 0;
    for (int i = 0; i < 3; ++i) at = text.find('\n', at) + 1;
    return text.substr(0, at);
  }();
  {
    MetricsSink sink;
    ASSERT_TRUE(sink.open(path, 3, 1).ok());
    sink.write(step_metrics(4));
  }
  EXPECT_EQ(steps_in(path), (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(read_all(path).substr(0, first_three.size()), first_three);

  // Resuming at a step beyond every line drops only the unfinished one.
  {
    std::ofstream out(path, std::ios::binary | std::ios::app);
    out << "{\"step\":5,\"lo";
  }
  {
    MetricsSink sink;
    ASSERT_TRUE(sink.open(path, 9, 1).ok());
    sink.write(step_metrics(10));
  }
  EXPECT_EQ(steps_in(path), (std::vector<int64_t>{1, 2, 3, 4, 10}));
}

TEST(MetricsSink, FullDiskDropsLinesWholeAndSaysSo) {
  TempDir dir;
  ScratchTmpfs disk(dir / "disk", 64 << 10);
  ACCUM_SKIP_UNLESS_MOUNTED(disk);
  const std::string path = dir / "disk/metrics.jsonl";
  MetricsSink sink;
  ASSERT_TRUE(sink.open(path, 0, 1000000).ok());
  sink.write(step_metrics(1));
  ASSERT_GT(disk.fill("filler"), 0u);

  // The file's last page has room for a few lines; then one is cut short by ENOSPC.
  ::testing::internal::CaptureStderr();
  int64_t step = 2;
  for (; step < 200; ++step) sink.write(step_metrics(step));
  const std::string warnings = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(warnings.find("metrics_path " + path + ": write failed: No space left on device"),
            std::string::npos)
      << warnings;
  EXPECT_EQ(warnings.find("write failed", warnings.find("write failed") + 1), std::string::npos)
      << "warned more than once: " << warnings;
  const std::vector<int64_t> written = steps_in(path);
  ASSERT_GT(written.size(), 1u);
  ASSERT_LT(written.size(), 199u) << "the disk never filled";
  for (size_t i = 0; i < written.size(); ++i) EXPECT_EQ(written[i], int64_t(i) + 1);

  std::filesystem::remove(dir / "disk/filler");
  ::testing::internal::CaptureStderr();
  sink.write(step_metrics(step));
  const std::string recovered = ::testing::internal::GetCapturedStderr();
  const int64_t lost = step - 1 - static_cast<int64_t>(written.size());
  EXPECT_NE(recovered.find("writing again; " + std::to_string(lost) + " step line(s) lost"),
            std::string::npos)
      << recovered;
  std::vector<int64_t> expected = written;
  expected.push_back(step);
  EXPECT_EQ(steps_in(path), expected);
}

}  // namespace
}  // namespace accum::train
