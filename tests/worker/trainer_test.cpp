// End-to-end tests of the real accum-worker process on the CPU back end:
// accumulation equivalence over whole optimizer steps, bit-identical resume,
// preemption by SIGTERM, the learning-rate schedule and the metrics contract.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "daemon/worker/io/checkpoint_dir.h"
#include "tests/common/same_bytes.h"
#include "tests/worker/worker_test_util.h"

namespace accum::testing {
namespace {

namespace fs = std::filesystem;

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override { write_file(dir_ / "corpus.txt", make_corpus(60000)); }

  // Writes `name`.json with the overrides and runs the worker on it.
  RunResult train(const std::string& name, const std::map<std::string, std::string>& overrides) {
    write_file(dir_ / (name + ".json"), tiny_spec_json(overrides));
    return run({worker_binary(), "--spec", dir_ / (name + ".json")});
  }

  // Trains `steps` straight, and again as a run to `first_steps` resumed to `steps`: the
  // same losses, grad norms, learning rates and final weights and Adam moments, bit for bit.
  // `first_steps` is the first run's max_steps, so the two must not depend on it.
  void expect_resume_matches_straight(std::map<std::string, std::string> spec, int first_steps,
                                      int steps) {
    const auto run_with = [&](const std::string& name, int max_steps, const char* ckpt,
                              const char* metrics, bool resume) {
      auto overrides = spec;
      overrides["max_steps"] = std::to_string(max_steps);
      overrides["checkpoint.dir"] = absl::StrCat("\"", ckpt, "\"");
      overrides["metrics_path"] = absl::StrCat("\"", metrics, "\"");
      if (resume) overrides["checkpoint.resume_from"] = "\"latest\"";
      return train(name, overrides);
    };
    auto straight = run_with("straight", steps, "ckpt_s", "s.jsonl", false);
    ASSERT_EQ(straight.exit_code, 0) << straight.output;
    auto first = run_with("first", first_steps, "ckpt_r", "r.jsonl", false);
    ASSERT_EQ(first.exit_code, 0) << first.output;
    auto second = run_with("second", steps, "ckpt_r", "r.jsonl", true);
    ASSERT_EQ(second.exit_code, 0) << second.output;
    EXPECT_NE(second.output.find("resumed from"), std::string::npos) << second.output;
    const auto s = read_metrics(dir_ / "s.jsonl"), r = read_metrics(dir_ / "r.jsonl");
    ASSERT_EQ(s.size(), size_t(steps));
    ASSERT_EQ(r.size(), size_t(steps));
    for (int i = 0; i < steps; ++i) {
      EXPECT_EQ(s[i].loss, r[i].loss) << "step " << i + 1;
      EXPECT_EQ(s[i].grad_norm, r[i].grad_norm) << "step " << i + 1;
      EXPECT_EQ(s[i].lr, r[i].lr) << "step " << i + 1;
    }
    const std::string last = io::step_dir_name(steps);
    for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
      const std::string path = absl::StrCat("/", last, "/", file);
      EXPECT_TRUE(same_bytes(dir_ / ("ckpt_s" + path), dir_ / ("ckpt_r" + path))) << file;
    }
  }

  TempDir dir_;
};

// The environment a running process started with (/proc/PID/environ), one "\nNAME=value\n"
// line each; "" if it is gone.
std::string environment_of(pid_t pid) {
  std::string env = read_file("/proc/" + std::to_string(pid) + "/environ");
  std::replace(env.begin(), env.end(), '\0', '\n');
  return env.empty() ? env : "\n" + env;
}

// Every rank gets a short OpenMP spin unless its environment chose one: a worker started
// without GOMP_SPINCOUNT or OMP_WAIT_POLICY (a plain `mpirun accum-worker`) restarts itself
// with GOMP_SPINCOUNT=10000, the same process; one started with OMP_WAIT_POLICY keeps that.
TEST_F(TrainerTest, AWorkerWithoutAnOpenMpWaitPolicyRunsWithAShortSpin) {
  write_file(dir_ / "long.json", tiny_spec_json({{"max_steps", "400"}}));
  const std::vector<std::string> argv = {worker_binary(), "--spec", dir_ / "long.json"};
  const char* saved_spin = std::getenv("GOMP_SPINCOUNT");
  const std::string spin = saved_spin != nullptr ? saved_spin : "";
  unsetenv("GOMP_SPINCOUNT");
  for (const bool passive : {false, true}) {
    if (passive) setenv("OMP_WAIT_POLICY", "passive", 1);
    const pid_t pid = spawn(argv, dir_ / "long.log");
    if (passive) unsetenv("OMP_WAIT_POLICY");
    // The worker has run for a while once it writes its first metrics line.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (read_file(dir_ / "metrics.jsonl").empty() &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    const std::string env = environment_of(pid);
    kill(pid, SIGKILL);
    wait_exit(pid, 30);
    fs::remove(dir_ / "metrics.jsonl");
    ASSERT_FALSE(env.empty()) << "the worker ended too soon: bad setup";
    if (passive) {
      EXPECT_EQ(env.find("GOMP_SPINCOUNT="), std::string::npos) << env;
    } else {
      EXPECT_NE(env.find("\nGOMP_SPINCOUNT=10000\n"), std::string::npos) << env;
    }
  }
  if (!spin.empty()) setenv("GOMP_SPINCOUNT", spin.c_str(), 1);
}

TEST_F(TrainerTest, LossFallsAndMetricsFollowTheContract) {
  auto result = train("job", {{"max_steps", "12"}, {"optimizer.lr", "0.01"}});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto metrics = read_metrics(dir_ / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 12u);
  for (size_t i = 0; i < metrics.size(); ++i) {
    EXPECT_EQ(metrics[i].step, static_cast<int64_t>(i + 1));  // optimizer steps, from 1
    EXPECT_EQ(metrics[i].tokens, 128);                        // the global batch
    for (const char* key :
         {"\"loss\":", "\"lr\":", "\"grad_norm\":", "\"tokens_per_s\":", "\"step_ms\":"}) {
      EXPECT_NE(metrics[i].raw.find(key), std::string::npos) << key;
    }
  }
  EXPECT_LT(metrics.back().loss, metrics.front().loss - 0.5);
  // Warmup lr*(s+1)/warmup, then cosine from lr to min_lr over the remaining steps.
  EXPECT_NEAR(metrics[0].lr, 0.01 * 1 / 2, 1e-12);
  EXPECT_NEAR(metrics[1].lr, 0.01, 1e-12);
  const double progress = (5.0 - 2) / (12 - 2);  // step index 5
  EXPECT_NEAR(metrics[5].lr, 0.0003 + 0.5 * (1 + std::cos(M_PI * progress)) * (0.01 - 0.0003),
              1e-12);
  EXPECT_TRUE(io::verify_checkpoint(dir_ / "ckpt/step_00000012").ok());
}

// model_tflops: tokens/s per rank x (6 N + 12 L C T) / 1e12 (the PaLM and llm.c count); no
// MFU on the CPU, whose peak the back end does not know.
TEST_F(TrainerTest, MetricsCountModelFlopsAndGiveNoMfuOnTheCpu) {
  auto result = train("flops", {{"max_steps", "3"}});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto metrics = read_metrics(dir_ / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 3u);
  // tiny_spec_json: L=2, C=32, V=256, max_seq_len 16, T=16.
  const double flops_per_token = 6.0 * gpt2_parameter_count(2, 32, 256, 16) + 12.0 * 2 * 32 * 16;
  for (const auto& line : metrics) {
    const double tokens_per_s = metric_value(line, "tokens_per_s");
    ASSERT_GT(tokens_per_s, 0) << line.raw;
    EXPECT_NEAR(metric_value(line, "model_tflops"), tokens_per_s * flops_per_token / 1e12,
                1e-6 * tokens_per_s * flops_per_token / 1e12)
        << line.raw;
    EXPECT_EQ(line.raw.find("\"mfu\""), std::string::npos) << line.raw;
  }
}

TEST_F(TrainerTest, EightMicroBatchesOfOneTrainLikeOneBatchOfEight) {
  // K=8 x B=1 and K=1 x B=8 read the same 8 sequences per optimizer step.
  auto a = train("accumulated", {{"batch.micro_batch_size", "1"},
                                 {"batch.tokens_per_update", ""},
                                 {"batch.grad_accum_steps", "8"},
                                 {"max_steps", "5"},
                                 {"checkpoint.dir", "\"ckpt_a\""},
                                 {"metrics_path", "\"a.jsonl\""}});
  ASSERT_EQ(a.exit_code, 0) << a.output;
  auto b = train("big", {{"batch.micro_batch_size", "8"},
                         {"batch.tokens_per_update", ""},
                         {"batch.grad_accum_steps", "1"},
                         {"max_steps", "5"},
                         {"checkpoint.dir", "\"ckpt_b\""},
                         {"metrics_path", "\"b.jsonl\""}});
  ASSERT_EQ(b.exit_code, 0) << b.output;
  const auto ma = read_metrics(dir_ / "a.jsonl"), mb = read_metrics(dir_ / "b.jsonl");
  ASSERT_EQ(ma.size(), 5u);
  ASSERT_EQ(mb.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_NEAR(ma[i].loss, mb[i].loss, 1e-5 * mb[i].loss) << "step " << i + 1;
    EXPECT_NEAR(ma[i].grad_norm, mb[i].grad_norm, 1e-5 * mb[i].grad_norm) << "step " << i + 1;
  }
  const auto wa = read_weights(dir_ / "ckpt_a/step_00000005/model.safetensors");
  const auto wb = read_weights(dir_ / "ckpt_b/step_00000005/model.safetensors");
  EXPECT_LE(relative_l2(wa, wb), 1e-5);
}

TEST_F(TrainerTest, ResumeIsBitIdentical) {
  // The resumed run names the full max_steps: the cosine schedule is the same one.
  expect_resume_matches_straight({{"data.shuffle", "true"}}, 3, 8);
}

// A run planned with optimizer.decay_steps, stopped early at its max_steps and resumed with a
// larger one (what `accumctl continue --max-steps` does), trains to the bits of the run
// that went straight there: the cosine is over decay_steps, not max_steps.
TEST_F(TrainerTest, DecayStepsLetsAShortRunContinueOnTheSameCurve) {
  expect_resume_matches_straight({{"optimizer.decay_steps", "8"}}, 4, 8);
}

// A job resumed at its last step (accumd restarts one that ended right after its final
// checkpoint) has nothing left to train: it succeeds, says so, and changes nothing.
TEST_F(TrainerTest, ResumeAtMaxStepsTrainsNothingAndSucceeds) {
  ASSERT_EQ(train("job", {{"max_steps", "5"}}).exit_code, 0);
  const std::string metrics_before = read_existing_file(dir_ / "metrics.jsonl");
  const std::string weights_before =
      read_existing_file(dir_ / "ckpt/step_00000005/model.safetensors");
  auto result = train("job", {{"max_steps", "5"}, {"checkpoint.resume_from", "\"latest\""}});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("nothing to train: the checkpoint's step 5 is max_steps; the job "
                               "is complete"),
            std::string::npos)
      << result.output;
  EXPECT_TRUE(holds_bytes(dir_ / "metrics.jsonl", metrics_before));
  EXPECT_TRUE(holds_bytes(dir_ / "ckpt/step_00000005/model.safetensors", weights_before));
  EXPECT_EQ(io::list_checkpoints(dir_ / "ckpt").size(), 1u);
}

// A global batch that reads more micro-batches than data.train holds reads some twice, so
// they weigh double: legal, but said, with the numbers. Enough data: no warning.
TEST_F(TrainerTest, DataShorterThanOneGlobalBatchIsWarnedAbout) {
  write_file(dir_ / "short.txt", make_corpus(100));  // floor(99 / 32) = 3 micro-batches
  auto result = train(
      "short",
      {{"max_steps", "1"}, {"data.train", "\"short.txt\""}, {"checkpoint.dir", "\"ckpt_short\""}});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("warning: data.train holds 3 micro-batches of B*T = 32 tokens, "
                               "and one optimizer step reads 4 (1 ranks x K=4)"),
            std::string::npos)
      << result.output;
  auto enough = train("enough", {{"max_steps", "1"}});
  ASSERT_EQ(enough.exit_code, 0) << enough.output;
  EXPECT_EQ(enough.output.find("warning: data.train"), std::string::npos) << enough.output;
}

// A global batch whose every target is masked has no gradient: the optimizer update is
// skipped (no weight decay, no moment update) and said so, the step reports no loss, and
// training goes on.
TEST_F(TrainerTest, FullyMaskedGlobalBatchSkipsTheOptimizerUpdate) {
  ASSERT_EQ(train("init", {{"max_steps", "1"}, {"checkpoint.dir", "\"ckpt_init\""}}).exit_code, 0);
  const std::string init = dir_ / "ckpt_init/step_00000001/model.safetensors";
  write_file(dir_ / "corpus.txt.mask", std::string(60000, '\0'));
  auto result = train("masked", {{"max_steps", "3"},
                                 {"data.use_mask", "true"},
                                 {"init_from", "\"" + init + "\""},
                                 {"optimizer.weight_decay", "0.5"},
                                 {"metrics_path", "\"masked.jsonl\""}});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto metrics = read_metrics(dir_ / "masked.jsonl");
  ASSERT_EQ(metrics.size(), 3u);
  for (int step = 1; step <= 3; ++step) {
    EXPECT_EQ(metrics[step - 1].tokens, 0);
    // No counted target, no loss: null rather than a 0 that reads as a perfect model.
    EXPECT_NE(metrics[step - 1].raw.find("\"loss\":null,"), std::string::npos)
        << metrics[step - 1].raw;
    const std::string words = "step " + std::to_string(step) +
                              ": every target of the global batch is masked (0 counted tokens); "
                              "the optimizer update was skipped";
    EXPECT_NE(result.output.find(words), std::string::npos) << words << ":\n" << result.output;
  }
  EXPECT_NE(result.output.find("step 3/3 loss - lr "), std::string::npos) << result.output;
  EXPECT_EQ(read_weights(dir_ / "ckpt/step_00000003/model.safetensors"), read_weights(init));
  for (float moment : read_weights(dir_ / "ckpt/step_00000003/optimizer.safetensors")) {
    ASSERT_EQ(moment, 0.0f);
  }
}

// Adam's bias correction counts the updates made, not the steps (as torch.optim counts its
// step() calls): two fully masked steps, then one counted, give the bits of one counted
// step from the same start. Every global batch holds the same tokens (the corpus repeats
// every 128 bytes, one global batch of 4 micro-batches of 2 x 16), so the counted step
// sees the same batch in both runs; the schedule is constant.
TEST_F(TrainerTest, SkippedUpdatesDoNotCountInAdamsBiasCorrection) {
  std::string period = make_corpus(128);
  std::string corpus;
  for (int i = 0; i < 100; ++i) corpus += period;
  write_file(dir_ / "periodic.txt", corpus);
  std::string mask(corpus.size(), '\1');
  std::fill(mask.begin(), mask.begin() + 257, '\0');  // the targets of steps 1 and 2
  write_file(dir_ / "periodic.txt.mask", mask);
  write_file(dir_ / "plain.txt", corpus);
  write_file(dir_ / "plain.txt.mask", std::string(corpus.size(), '\1'));
  const std::map<std::string, std::string> common = {{"data.use_mask", "true"},
                                                     {"data.shuffle", "false"},
                                                     {"optimizer.schedule", "\"constant\""},
                                                     {"optimizer.warmup_steps", "0"}};
  auto skipped = common, counted = common;
  skipped.insert({{"data.train", "\"periodic.txt\""},
                  {"max_steps", "3"},
                  {"checkpoint.dir", "\"ckpt_skipped\""},
                  {"metrics_path", "\"skipped.jsonl\""}});
  counted.insert({{"data.train", "\"plain.txt\""},
                  {"max_steps", "1"},
                  {"checkpoint.dir", "\"ckpt_counted\""},
                  {"metrics_path", "\"counted.jsonl\""}});
  auto a = train("skipped", skipped);
  ASSERT_EQ(a.exit_code, 0) << a.output;
  auto b = train("counted", counted);
  ASSERT_EQ(b.exit_code, 0) << b.output;
  const auto ma = read_metrics(dir_ / "skipped.jsonl"), mb = read_metrics(dir_ / "counted.jsonl");
  ASSERT_EQ(ma.size(), 3u);
  ASSERT_EQ(mb.size(), 1u);
  EXPECT_EQ(ma[0].tokens, 0);
  EXPECT_EQ(ma[1].tokens, 0);
  EXPECT_EQ(ma[2].tokens, mb[0].tokens);
  EXPECT_EQ(ma[2].loss, mb[0].loss);  // the same weights saw the same batch
  EXPECT_EQ(read_weights(dir_ / "ckpt_skipped/step_00000003/model.safetensors"),
            read_weights(dir_ / "ckpt_counted/step_00000001/model.safetensors"));
  EXPECT_EQ(read_weights(dir_ / "ckpt_skipped/step_00000003/optimizer.safetensors"),
            read_weights(dir_ / "ckpt_counted/step_00000001/optimizer.safetensors"));
  // The count is saved: stopped after the two skipped steps and resumed, the same bits.
  auto first = skipped, second = skipped;
  first["max_steps"] = "2";
  first["checkpoint.dir"] = second["checkpoint.dir"] = "\"ckpt_resumed\"";
  first["metrics_path"] = second["metrics_path"] = "\"resumed.jsonl\"";
  second["checkpoint.resume_from"] = "\"latest\"";
  ASSERT_EQ(train("first", first).exit_code, 0);
  auto resumed = train("second", second);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_EQ(read_weights(dir_ / "ckpt_resumed/step_00000003/model.safetensors"),
            read_weights(dir_ / "ckpt_counted/step_00000001/model.safetensors"));
}

TEST_F(TrainerTest, SigtermFinishesTheStepCheckpointsAndResumes) {
  const auto overrides = std::map<std::string, std::string>{{"max_steps", "400"},
                                                            {"model.n_layer", "3"},
                                                            {"model.d_model", "64"},
                                                            {"optimizer.schedule", "\"constant\""},
                                                            {"optimizer.warmup_steps", "0"}};
  write_file(dir_ / "long.json", tiny_spec_json(overrides));
  pid_t pid = spawn({worker_binary(), "--spec", dir_ / "long.json"}, dir_ / "long.log");
  // Wait for a few optimizer steps, then preempt.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (read_metrics(dir_ / "metrics.jsonl").size() < 3 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  ASSERT_EQ(wait_exit(pid, 120), 0) << read_file(dir_ / "long.log");
  const auto before = read_metrics(dir_ / "metrics.jsonl");
  ASSERT_GE(before.size(), 3u);
  ASSERT_LT(before.size(), 400u) << "the job finished before SIGTERM arrived";
  const int64_t stopped_at = before.back().step;
  const auto checkpoints = io::list_checkpoints(dir_ / "ckpt");
  ASSERT_FALSE(checkpoints.empty());
  EXPECT_EQ(checkpoints.back().first, stopped_at);  // the step it finished, complete
  EXPECT_TRUE(io::verify_checkpoint(checkpoints.back().second).ok());

  // Resume to a few steps past the stop: the curve continues where it stopped, bit for bit
  // the curve of a run to the same step that was never stopped (the constant schedule does
  // not depend on max_steps).
  auto resumed = overrides;
  resumed["checkpoint.resume_from"] = "\"latest\"";
  resumed["max_steps"] = std::to_string(stopped_at + 2);
  write_file(dir_ / "resume.json", tiny_spec_json(resumed));
  auto result = run({worker_binary(), "--spec", dir_ / "resume.json"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("at step " + std::to_string(stopped_at) + " (written by 1 ranks"),
            std::string::npos)
      << result.output;
  const auto after = read_metrics(dir_ / "metrics.jsonl");
  ASSERT_EQ(after.size(), static_cast<size_t>(stopped_at + 2));
  for (int64_t i = 0; i < stopped_at; ++i) EXPECT_EQ(after[i].loss, before[i].loss);
  EXPECT_EQ(after.back().step, stopped_at + 2);

  auto straight = overrides;
  straight["max_steps"] = std::to_string(stopped_at + 2);
  straight["checkpoint.dir"] = "\"ckpt_straight\"";
  straight["metrics_path"] = "\"straight.jsonl\"";
  write_file(dir_ / "straight.json", tiny_spec_json(straight));
  const auto uninterrupted = run({worker_binary(), "--spec", dir_ / "straight.json"});
  ASSERT_EQ(uninterrupted.exit_code, 0) << uninterrupted.output;
  const auto expected = read_metrics(dir_ / "straight.jsonl");
  ASSERT_EQ(expected.size(), after.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].step, expected[i].step);
    EXPECT_EQ(after[i].loss, expected[i].loss) << "step " << i + 1;
    EXPECT_EQ(after[i].grad_norm, expected[i].grad_norm) << "step " << i + 1;
  }
  const std::string last =
      absl::StrCat("/", io::step_dir_name(stopped_at + 2), "/model.safetensors");
  EXPECT_EQ(read_weights(dir_ / ("ckpt" + last)), read_weights(dir_ / ("ckpt_straight" + last)));
}

TEST_F(TrainerTest, ValidationLossIsReportedEveryEvalInterval) {
  write_file(dir_ / "val.txt", make_corpus(5000, 99));
  auto result = train("job", {{"max_steps", "6"},
                              {"data.val", "\"val.txt\""},
                              {"eval.every_steps", "2"},
                              {"eval.batches", "2"}});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto metrics = read_metrics(dir_ / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 6u);
  for (const auto& m : metrics) {
    const bool has_val = m.raw.find("\"val_loss\":") != std::string::npos;
    EXPECT_EQ(has_val, m.step % 2 == 0) << m.raw;
  }
  EXPECT_NE(result.output.find("memory: params"), std::string::npos) << result.output;
}

// A validation set whose every target is masked has no mean loss: none is reported (0
// would read as a perfect model), and the log says why.
TEST_F(TrainerTest, FullyMaskedValidationReportsNoValidationLoss) {
  write_file(dir_ / "val.txt", make_corpus(5000, 99));
  write_file(dir_ / "val.txt.mask", std::string(5000, '\0'));
  write_file(dir_ / "corpus.txt.mask", std::string(60000, '\1'));
  auto result = train("job", {{"max_steps", "2"},
                              {"data.use_mask", "true"},
                              {"data.val", "\"val.txt\""},
                              {"eval.every_steps", "1"},
                              {"eval.batches", "3"}});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto metrics = read_metrics(dir_ / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 2u);
  for (const auto& m : metrics) {
    EXPECT_EQ(m.raw.find("\"val_loss\":"), std::string::npos) << m.raw;
    EXPECT_GT(m.tokens, 0);  // the training targets still count
  }
  EXPECT_NE(result.output.find("evaluation: every target of the 3 x 1 validation micro-batches "
                               "is masked (0 counted tokens); no val_loss reported"),
            std::string::npos)
      << result.output;
}

TEST_F(TrainerTest, MicroBatchThatCannotFitIsRefusedWithAdvice) {
  // 1M-token micro-batches of a 50k vocabulary need terabytes of logits.
  auto result = train("huge", {{"model.vocab_size", "50000"},
                               {"model.max_seq_len", "1024"},
                               {"batch.seq_len", "1024"},
                               {"batch.micro_batch_size", "1024"},
                               {"batch.tokens_per_update", "2097152"}});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("out of memory"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("largest micro_batch_size that fits is"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("keeps tokens_per_update 2097152"), std::string::npos)
      << result.output;
}

TEST_F(TrainerTest, InitFromLoadsExportedWeights) {
  auto first = train("first", {{"max_steps", "2"}, {"checkpoint.dir", "\"ckpt_a\""}});
  ASSERT_EQ(first.exit_code, 0) << first.output;
  // A checkpoint's model.safetensors is a Hugging Face GPT-2 state dict: it loads back.
  auto second = train("second", {{"max_steps", "1"},
                                 {"checkpoint.dir", "\"ckpt_b\""},
                                 {"optimizer.lr", "1e-9"},
                                 {"optimizer.min_lr", "0"},
                                 {"optimizer.schedule", "\"constant\""},
                                 {"optimizer.warmup_steps", "0"},
                                 {"optimizer.weight_decay", "0"},
                                 {"init_from", "\"ckpt_a/step_00000002/model.safetensors\""}});
  ASSERT_EQ(second.exit_code, 0) << second.output;
  const auto a = read_weights(dir_ / "ckpt_a/step_00000002/model.safetensors");
  const auto b = read_weights(dir_ / "ckpt_b/step_00000001/model.safetensors");
  EXPECT_LT(relative_l2(b, a), 1e-6);
}

}  // namespace
}  // namespace accum::testing
