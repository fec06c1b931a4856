// Numbers that are not numbers: training that diverges to NaN/Inf stops with a clear error,
// exit 2 (a rerun diverges the same way), and writes no checkpoint after the step that went
// wrong, so retention never removes the last finite one; weights and optimizer moments that
// are not finite (or a negative second moment) are refused when they are read. The real
// accum-worker on real files.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "daemon/worker/io/checkpoint_dir.h"
#include "tests/worker/worker_test_util.h"

namespace accum::testing {
namespace {

namespace fs = std::filesystem;

class NonFiniteTest : public ::testing::Test {
 protected:
  void SetUp() override { write_file(dir_ / "corpus.txt", make_corpus(20000)); }

  RunResult run_with(const std::map<std::string, std::string>& overrides) {
    write_file(dir_ / "job.json", tiny_spec_json(overrides));
    return run({worker_binary(), "--spec", dir_ / "job.json"});
  }
  std::vector<int64_t> checkpoint_steps(const std::string& root) {
    std::vector<int64_t> steps;
    for (const auto& [step, path] : io::list_checkpoints(root)) steps.push_back(step);
    return steps;
  }
  void expect_no_temp_dirs(const std::string& root) {
    for (const auto& entry : fs::directory_iterator(root)) {
      EXPECT_NE(entry.path().filename().string().rfind(".tmp-", 0), 0u)
          << "left behind: " << entry.path();
    }
  }

  TempDir dir_;
};

// The audit's reproduction: 20 good steps checkpointed every 10 (keep_last 2), then a resume
// with optimizer settings that blow up within a few steps. The worker stops at the first
// optimizer step whose loss or gradient norm is not finite, exit 2, naming the step and the
// last checkpoint; it writes no checkpoint after it, so step 10 and step 20 survive
// retention untouched, and `latest` still names step 20. A rerun stops at the same step
// with the same message.
TEST_F(NonFiniteTest, DivergedTrainingStopsAndKeepsTheLastFiniteCheckpoints) {
  const std::map<std::string, std::string> checkpoints = {{"checkpoint.every_steps", "10"},
                                                          {"checkpoint.keep_last", "2"},
                                                          {"optimizer.schedule", "\"constant\""},
                                                          {"optimizer.warmup_steps", "0"}};
  auto with = [&](std::map<std::string, std::string> overrides) {
    overrides.insert(checkpoints.begin(), checkpoints.end());
    return overrides;
  };
  ASSERT_EQ(run_with(with({{"max_steps", "20"}})).exit_code, 0);
  ASSERT_EQ(checkpoint_steps(dir_ / "ckpt"), (std::vector<int64_t>{10, 20}));
  const std::string step10 = read_file(dir_ / "ckpt/step_00000010/model.safetensors");
  const std::string step20 = read_file(dir_ / "ckpt/step_00000020/model.safetensors");

  const auto diverging = with({{"max_steps", "40"},
                               {"checkpoint.resume_from", "\"latest\""},
                               {"optimizer.lr", "10"},
                               {"optimizer.min_lr", "0"},
                               {"optimizer.grad_clip", "0"},
                               {"optimizer.weight_decay", "0"},
                               {"optimizer.eps", "1e-30"},
                               {"optimizer.beta2", "0"}});
  auto result = run_with(diverging);
  EXPECT_EQ(result.exit_code, 2) << result.output;

  // The metrics end with the last finite step; the message names the step after it.
  const auto metrics = read_metrics(dir_ / "metrics.jsonl");
  ASSERT_GT(metrics.size(), 20u);
  for (const auto& line : metrics) {
    EXPECT_TRUE(std::isfinite(line.loss) && std::isfinite(line.grad_norm)) << line.raw;
  }
  const int64_t bad_step = metrics.back().step + 1;
  ASSERT_LE(bad_step, 30) << "expected the run to diverge before its next checkpoint";
  const std::string error = "step " + std::to_string(bad_step) + ": loss is ";
  const auto at = result.output.find(error);
  ASSERT_NE(at, std::string::npos) << result.output;
  const std::string message = result.output.substr(at, result.output.find('\n', at) - at);
  for (const char* words :
       {"training diverged", "the last checkpoint, step 20 (",
        "step_00000020), holds finite weights", "no checkpoint follows it", "lower optimizer.lr"}) {
    EXPECT_NE(message.find(words), std::string::npos) << words << ": " << message;
  }
  EXPECT_TRUE(message.find("is nan") != std::string::npos ||
              message.find("is inf") != std::string::npos)
      << message;

  EXPECT_EQ(checkpoint_steps(dir_ / "ckpt"), (std::vector<int64_t>{10, 20}));
  EXPECT_EQ(read_file(dir_ / "ckpt/latest"), "step_00000020\n");
  EXPECT_EQ(read_file(dir_ / "ckpt/step_00000010/model.safetensors"), step10);
  EXPECT_EQ(read_file(dir_ / "ckpt/step_00000020/model.safetensors"), step20);
  expect_no_temp_dirs(dir_ / "ckpt");

  // Bit-reproducible: the rerun accumd would make diverges at the same step, the same way.
  auto rerun = run_with(diverging);
  EXPECT_EQ(rerun.exit_code, 2) << rerun.output;
  EXPECT_NE(rerun.output.find(message), std::string::npos) << rerun.output;
  EXPECT_EQ(checkpoint_steps(dir_ / "ckpt"), (std::vector<int64_t>{10, 20}));
}

// A step whose loss and gradient are finite but whose update leaves weights that are not
// (here: a resumed first moment near FLT_MAX, which the bias correction takes past it) is
// not checkpointed: exit 2 naming the step and the tensor, no step directory, no temporary
// one, and `latest` still names the checkpoint before.
TEST_F(NonFiniteTest, UpdateThatLeavesNonFiniteWeightsIsNotCheckpointed) {
  ASSERT_EQ(run_with({{"max_steps", "2"}}).exit_code, 0);
  const std::string step_dir = dir_ / "ckpt/step_00000002";
  ASSERT_NO_THROW({
    rewrite_tensor(step_dir + "/optimizer.safetensors", "exp_avg",
                   [](std::vector<float>* m) { std::fill(m->begin(), m->end(), 3e38f); });
    rewrite_tensor(step_dir + "/optimizer.safetensors", "exp_avg_sq",
                   [](std::vector<float>* v) { std::fill(v->begin(), v->end(), 0.0f); });
    reseal_manifest(step_dir, "optimizer.safetensors");
  });
  auto result = run_with({{"max_steps", "3"}, {"checkpoint.resume_from", "\"latest\""}});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  for (const char* words : {"checkpoint of step 3", "nothing of it was kept",
                            "step 3's update left weights that are not finite (tensor transformer.",
                            "training diverged"}) {
    EXPECT_NE(result.output.find(words), std::string::npos) << words << ": " << result.output;
  }
  // The step itself was finite: its metrics line is there.
  const auto metrics = read_metrics(dir_ / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 3u);
  EXPECT_TRUE(std::isfinite(metrics.back().loss)) << metrics.back().raw;
  EXPECT_EQ(checkpoint_steps(dir_ / "ckpt"), std::vector<int64_t>{2});
  EXPECT_EQ(read_file(dir_ / "ckpt/latest"), "step_00000002\n");
  expect_no_temp_dirs(dir_ / "ckpt");
}

// Weights or moments that are not numbers, or a negative second moment, in a checkpoint
// the manifest vouches for: refused as bad input naming the file, the tensor, the value
// and the element, before any training.
struct LoadCase {
  std::string file, tensor;
  float value;
  std::string expected;
};

TEST_F(NonFiniteTest, CheckpointWithNonFiniteValuesIsRefusedNamingFileAndTensor) {
  ASSERT_EQ(run_with({{"max_steps", "2"}}).exit_code, 0);
  const std::string step_dir = dir_ / "ckpt/step_00000002";
  const std::string metrics_before = read_file(dir_ / "metrics.jsonl");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<LoadCase> cases = {
      {"model.safetensors", "transformer.h.0.attn.c_attn.weight", nan,
       "model.safetensors: tensor transformer.h.0.attn.c_attn.weight holds nan at element 5 "
       "of 3072; expected finite weights"},
      {"model.safetensors", "transformer.wte.weight", -inf,
       "model.safetensors: tensor transformer.wte.weight holds -inf at element 5 of 8192"},
      {"optimizer.safetensors", "exp_avg", inf,
       "optimizer.safetensors: tensor exp_avg holds inf at element 5 of"},
      {"optimizer.safetensors", "exp_avg_sq", nan,
       "optimizer.safetensors: tensor exp_avg_sq holds nan at element 5 of"},
      {"optimizer.safetensors", "exp_avg_sq", -1.0f,
       "optimizer.safetensors: tensor exp_avg_sq holds -1 at element 5 of"},
  };
  for (const LoadCase& c : cases) {
    SCOPED_TRACE(c.tensor);
    const std::string path = step_dir + "/" + c.file;
    const std::string original = read_file(path);
    ASSERT_NO_THROW({
      rewrite_tensor(path, c.tensor, [&](std::vector<float>* values) { (*values)[5] = c.value; });
      reseal_manifest(step_dir, c.file);
    });
    auto result = run_with({{"max_steps", "4"}, {"checkpoint.resume_from", "\"latest\""}});
    EXPECT_EQ(result.exit_code, 2) << result.output;
    EXPECT_NE(result.output.find(c.expected), std::string::npos) << result.output;
    EXPECT_EQ(read_file(dir_ / "metrics.jsonl"), metrics_before);
    EXPECT_EQ(checkpoint_steps(dir_ / "ckpt"), std::vector<int64_t>{2});
    write_file(path, original);
    ASSERT_NO_THROW(reseal_manifest(step_dir, c.file));
  }
  // Put back as it was, the checkpoint resumes.
  auto resumed = run_with({{"max_steps", "4"}, {"checkpoint.resume_from", "\"latest\""}});
  EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
}

// init_from is read with the same check: a NaN in it is bad input naming the file and the
// tensor, not a run that trains on NaN.
TEST_F(NonFiniteTest, InitFromWithANanIsRefusedNamingFileAndTensor) {
  ASSERT_EQ(run_with({{"max_steps", "1"}, {"checkpoint.dir", "\"first\""}}).exit_code, 0);
  const std::string init = dir_ / "init.safetensors";
  write_file(init, read_file(dir_ / "first/step_00000001/model.safetensors"));
  ASSERT_NO_THROW(rewrite_tensor(init, "transformer.ln_f.bias", [](std::vector<float>* values) {
    values->back() = std::numeric_limits<float>::quiet_NaN();
  }));
  auto result = run_with({{"max_steps", "2"},
                          {"checkpoint.dir", "\"second\""},
                          {"metrics_path", "\"second.jsonl\""},
                          {"init_from", "\"init.safetensors\""}});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("init.safetensors: tensor transformer.ln_f.bias holds nan at "
                               "element 31 of 32; expected finite weights"),
            std::string::npos)
      << result.output;
  EXPECT_FALSE(fs::exists(dir_ / "second.jsonl"));
}

}  // namespace
}  // namespace accum::testing
