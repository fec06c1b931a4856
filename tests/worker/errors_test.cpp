// Bad input reaches the user as a clear error and a non-zero exit, and loses
// nothing: one test per error path of the worker's edge (spec, data, checkpoints).
#include <gtest/gtest.h>
#include <signal.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "daemon/worker/io/checkpoint_dir.h"
#include "daemon/worker/io/json.h"
#include "tests/common/scratch_tmpfs.h"
#include "tests/worker/worker_test_util.h"

namespace accum::testing {
namespace {

class WorkerErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override { write_file(dir_ / "corpus.txt", make_corpus(20000)); }

  RunResult run_spec(const std::string& json) {
    write_file(dir_ / "job.json", json);
    return run({worker_binary(), "--spec", dir_ / "job.json"});
  }
  RunResult run_with(const std::map<std::string, std::string>& overrides) {
    return run_spec(tiny_spec_json(overrides));
  }

  TempDir dir_;
};

// Each case: a bad value and the words the message must contain.
struct SpecCase {
  std::string field, value;
  std::vector<std::string> expected;
};

TEST_F(WorkerErrorsTest, EverySpecFieldIsRangeChecked) {
  const std::vector<SpecCase> cases = {
      {"model.n_layer", "0", {"model.n_layer", "got 0"}},
      {"model.n_head", "-1", {"model.n_head"}},
      {"model.d_model", "0", {"model.d_model"}},
      {"model.vocab_size", "100", {"model.vocab_size", "TEXT_BYTES"}},
      {"model.preset", "\"gpt3\"", {"model.preset", "gpt3", "gpt2-124m"}},
      {"batch.micro_batch_size", "0", {"batch.micro_batch_size"}},
      {"batch.grad_accum_steps", "-3", {"batch"}},
      {"optimizer.lr", "-0.1", {"optimizer.lr"}},
      {"optimizer.min_lr", "1.0", {"optimizer.min_lr"}},
      {"optimizer.beta1", "1.0", {"optimizer.beta1", "[0, 1)"}},
      {"optimizer.beta2", "1.5", {"optimizer.beta2"}},
      {"optimizer.beta2", "0.99999999", {"optimizer.beta2", "at most 0.99999997"}},
      {"optimizer.eps", "0", {"optimizer.eps"}},
      {"optimizer.weight_decay", "-1", {"optimizer.weight_decay"}},
      {"optimizer.grad_clip", "-1", {"optimizer.grad_clip"}},
      {"optimizer.warmup_steps", "-5", {"optimizer.warmup_steps"}},
      {"optimizer.schedule", "\"linear\"", {"optimizer.schedule", "cosine", "constant"}},
      {"optimizer.decay_steps", "2", {"optimizer.decay_steps", "above optimizer.warmup_steps (2)"}},
      {"optimizer.decay_steps", "-1", {"optimizer.decay_steps", "got -1"}},
      {"max_steps", "0", {"max_steps", ">= 1"}},
      {"checkpoint.keep_last", "-1", {"checkpoint.keep_last"}},
      {"checkpoint.every_steps", "-2", {"checkpoint.every_steps", "got -2"}},
      {"log_every_steps", "-1", {"log_every_steps", "got -1"}},
      {"world_size", "-3", {"world_size", "got -3"}},
      {"data.val", "\"\"", {"data.val", "empty path"}},
      {"data.val", "\"missing.txt\"", {"data.val: data file", "missing.txt does not exist"}},
      {"data.train", "\"missing.txt\"", {"data.train: data file", "missing.txt does not exist"}},
      // Enums given as numbers (JSON, or any proto client) outside the enum.
      {"device", "7", {"device", "got 7", "CPU, CUDA"}},
      {"data.format", "42", {"data.format", "got 42", "AUTO, LLMC, NANOGPT_BIN, TEXT_BYTES"}},
      {"precision", "9", {"precision", "got 9", "not a known value", "FP32, BF16"}},
      {"distributed.zero_stage", "3", {"distributed.zero_stage", "0 or 1"}},
      {"distributed.timeout_s", "-1", {"distributed.timeout_s"}},
      {"precision", "\"BF16\"", {"precision", "CUDA"}},
      {"cuda.keep_cublaslt_algorithms", "true", {"cuda.keep_cublaslt_algorithms", "device CUDA"}},
      {"eval.every_steps", "5", {"data.val"}},
      {"max_restarts", "-1", {"max_restarts", "got -1", "[0, 1000]"}},
      {"max_restarts", "1001", {"max_restarts", "got 1001", "[0, 1000]"}},
  };
  for (const auto& test_case : cases) {
    auto result = run_with({{test_case.field, test_case.value}});
    EXPECT_EQ(result.exit_code, 2) << test_case.field << ": " << result.output;
    for (const auto& word : test_case.expected) {
      EXPECT_NE(result.output.find(word), std::string::npos)
          << test_case.field << " message lacks \"" << word << "\": " << result.output;
    }
  }
}

// Only the cosine decays: a decay_steps beside a constant schedule is a mistake, said so.
TEST_F(WorkerErrorsTest, DecayStepsWithAConstantScheduleIsRefused) {
  auto result = run_with({{"optimizer.schedule", "\"constant\""}, {"optimizer.decay_steps", "10"}});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("`optimizer.decay_steps`: got 10 with schedule \"constant\""),
            std::string::npos)
      << result.output;
}

// max_restarts is the daemon's: an explicit 0 ("never restart") must survive
// validation, and an unset value must stay unset for the daemon to fill.
TEST_F(WorkerErrorsTest, MaxRestartsKeepsAnExplicitZeroAndLeavesUnsetForTheDaemon) {
  write_file(dir_ / "job.json", tiny_spec_json({{"max_restarts", "0"}}));
  auto result = run({worker_binary(), "--spec", dir_ / "job.json", "--print-spec"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("\"max_restarts\": 0"), std::string::npos) << result.output;
  write_file(dir_ / "job.json", tiny_spec_json());
  result = run({worker_binary(), "--spec", dir_ / "job.json", "--print-spec"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(result.output.find("max_restarts"), std::string::npos) << result.output;
}

TEST_F(WorkerErrorsTest, UnknownFieldIsRejectedByName) {
  auto result = run_with({{"optimizer.learning_rate", "0.1"}});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("learning_rate"), std::string::npos) << result.output;
}

// protobuf's JSON parser would take the last of two values, or append two lists, and reads
// max_steps and maxSteps as one field: a key given twice is refused, naming it.
TEST_F(WorkerErrorsTest, FieldGivenTwiceIsRefusedByName) {
  auto result = run_with({{"maxSteps", "7"}});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("spec field `max_steps`: given twice in one object"),
            std::string::npos)
      << result.output;
  std::string json = tiny_spec_json();
  const std::string train = "\"train\": \"corpus.txt\"";
  ASSERT_NE(json.find(train), std::string::npos) << json;
  json.replace(json.find(train), train.size(), train + ", \"train\": \"/etc/passwd\"");
  result = run_spec(json);
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("spec field `data.train`: given twice in one object"),
            std::string::npos)
      << result.output;
  // The same key in two objects is two fields.
  write_file(dir_ / "job.json",
             tiny_spec_json({{"eval.every_steps", "0"}, {"checkpoint.every_steps", "0"}}));
  result = run({worker_binary(), "--spec", dir_ / "job.json", "--print-spec"});
  EXPECT_EQ(result.exit_code, 0) << result.output;
}

// protobuf's JSON parser takes time quadratic in the nesting depth: 100,000 levels of '['
// kept the worker busy for over a minute. Nesting no spec needs is refused at once, by field.
TEST_F(WorkerErrorsTest, DeepNestingIsRefusedQuicklyByName) {
  constexpr int kDepth = 100000;
  write_file(dir_ / "job.json",
             tiny_spec_json({{"name", std::string(kDepth, '[') + std::string(kDepth, ']')}}));
  auto result = run({worker_binary(), "--spec", dir_ / "job.json", "--print-spec"}, 60);
  EXPECT_EQ(result.exit_code, 2) << result.output.substr(0, 2000);
  EXPECT_NE(result.output.find("spec field `name`: nested deeper than 32 objects and lists"),
            std::string::npos)
      << result.output.substr(0, 2000);
}

TEST_F(WorkerErrorsTest, EvalBatchesAndNameHaveUpperBounds) {
  auto result = run_with({{"eval.batches", "2000000000"}});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("spec field `eval.batches`: got 2000000000, expected 1..10000"),
            std::string::npos)
      << result.output;
  std::string name;
  for (int i = 0; i < 70; ++i) name += "\u00e9";  // 2 bytes of UTF-8 each
  result = run_with({{"name", "\"" + name + "\""}});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("spec field `name`: got 140 bytes of UTF-8, expected at most 128"),
            std::string::npos)
      << result.output;
}

TEST_F(WorkerErrorsTest, MalformedJsonNamesTheFile) {
  auto result = run_spec("{\"name\": ");
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("job.json"), std::string::npos) << result.output;
}

TEST_F(WorkerErrorsTest, IndivisibleTokensPerUpdateNamesTheThreeNumbers) {
  auto result = run_with({{"batch.tokens_per_update", "100"}});  // B*T = 2*16 = 32
  EXPECT_EQ(result.exit_code, 2);
  for (const char* word : {"tokens_per_update 100", "2*16*1", "32"}) {
    EXPECT_NE(result.output.find(word), std::string::npos) << word << ": " << result.output;
  }
}

TEST_F(WorkerErrorsTest, HeadsMustDivideModelWidth) {
  auto result = run_with({{"model.n_head", "3"}});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("n_head 3 does not divide d_model 32"), std::string::npos)
      << result.output;
}

// The CUDA attention kernels exist for a few head sizes only (kernels/cuda/attention.cu):
// any other is refused by the validator, not by the first forward on the GPU.
TEST_F(WorkerErrorsTest, CudaHeadSizeWithoutAnAttentionKernelIsRefused) {
  // d_model 32 / n_head 8 = 4.
  auto result = run_with({{"device", "\"CUDA\""}, {"model.n_head", "8"}});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  for (const char* word : {"model.n_head", "model.d_model 32", "model.n_head 8", "head size 4",
                           "8, 16, 32, 64, 128"}) {
    EXPECT_NE(result.output.find(word), std::string::npos) << word << ": " << result.output;
  }
  // A supported head size (32 / 2 = 16) passes; the CPU back end has no such limit.
  write_file(dir_ / "job.json", tiny_spec_json({{"device", "\"CUDA\""}}));
  result = run({worker_binary(), "--spec", dir_ / "job.json", "--print-spec"});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  write_file(dir_ / "job.json", tiny_spec_json({{"model.n_head", "8"}}));
  result = run({worker_binary(), "--spec", dir_ / "job.json", "--print-spec"});
  EXPECT_EQ(result.exit_code, 0) << result.output;
}

TEST_F(WorkerErrorsTest, SeqLenAboveModelContextIsRefused) {
  auto result = run_with({{"batch.seq_len", "64"}});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("seq_len 64 exceeds model.max_seq_len 16"), std::string::npos)
      << result.output;
}

TEST_F(WorkerErrorsTest, MissingDataFileIsNamed) {
  auto result = run_with({{"data.train", "\"nowhere.txt\""}});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("nowhere.txt"), std::string::npos) << result.output;
}

TEST_F(WorkerErrorsTest, TooShortDataSaysHowManyTokensAreNeeded) {
  write_file(dir_ / "short.txt", "tiny");
  auto result = run_with({{"data.train", "\"short.txt\""}});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("33"), std::string::npos) << result.output;  // B*T+1
}

TEST_F(WorkerErrorsTest, CorruptShardIsNamedWithFileAndReason) {
  // An llm.c shard whose magic is wrong.
  std::string shard(1024 + 2 * 100, '\0');
  int32_t header[3] = {12345, 1, 100};
  std::memcpy(shard.data(), header, sizeof(header));
  write_file(dir_ / "bad_magic.bin", shard);
  auto result = run_with({{"data.train", "\"bad_magic.bin\""}, {"data.format", "\"LLMC\""}});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("bad_magic.bin"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("12345"), std::string::npos) << result.output;

  // A shard whose size does not match its header's token count.
  header[0] = 20240520;
  header[2] = 500;
  std::memcpy(shard.data(), header, sizeof(header));
  write_file(dir_ / "short_shard.bin", shard);
  result = run_with({{"data.train", "\"short_shard.bin\""}, {"data.format", "\"LLMC\""}});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("short_shard.bin"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("500"), std::string::npos) << result.output;
}

TEST_F(WorkerErrorsTest, TokenAboveVocabIsNamedWithOffset) {
  std::vector<uint16_t> tokens(200, 7);
  tokens[123] = 300;  // vocab_size is 256
  write_file(dir_ / "tokens.bin",
             std::string(reinterpret_cast<const char*>(tokens.data()), tokens.size() * 2));
  auto result = run_with({{"data.train", "\"tokens.bin\""}, {"data.format", "\"NANOGPT_BIN\""}});
  EXPECT_EQ(result.exit_code, 2);
  for (const char* word : {"tokens.bin", "300", "123", "256"}) {
    EXPECT_NE(result.output.find(word), std::string::npos) << word << ": " << result.output;
  }
}

TEST_F(WorkerErrorsTest, CorruptCheckpointIsRefusedNamingTheFile) {
  ASSERT_EQ(run_with({{"max_steps", "2"}}).exit_code, 0);
  const std::string model = dir_ / "ckpt/step_00000002/model.safetensors";
  std::string bytes = read_file(model);
  bytes[bytes.size() - 5] ^= 0x5a;
  write_file(model, bytes);
  auto result = run_with({{"max_steps", "4"}, {"checkpoint.resume_from", "\"latest\""}});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("model.safetensors"), std::string::npos) << result.output;
}

// A damaged newest checkpoint with an older good one: training resumes from the older
// one (nothing else is lost) and says which checkpoint it passed over and why.
TEST_F(WorkerErrorsTest, DamagedLatestCheckpointIsPassedOverOutLoud) {
  ASSERT_EQ(run_with({{"max_steps", "2"}, {"checkpoint.every_steps", "1"}}).exit_code, 0);
  const std::string model = dir_ / "ckpt/step_00000002/model.safetensors";
  std::string bytes = read_file(model);
  bytes[bytes.size() - 5] ^= 0x5a;
  write_file(model, bytes);
  auto result = run_with({{"max_steps", "4"},
                          {"checkpoint.every_steps", "1"},
                          {"checkpoint.resume_from", "\"latest\""}});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  for (const char* word : {"not resuming from a newer checkpoint", "step_00000002",
                           "model.safetensors", "resumed from"}) {
    EXPECT_NE(result.output.find(word), std::string::npos) << word << ": " << result.output;
  }
  EXPECT_NE(result.output.find("step_00000001"), std::string::npos) << result.output;
}

TEST_F(WorkerErrorsTest, MismatchedResumeIsRefusedAndTheGoodCheckpointSurvives) {
  ASSERT_EQ(run_with({{"max_steps", "2"}}).exit_code, 0);
  const std::string model = dir_ / "ckpt/step_00000002/model.safetensors";
  const std::string before = read_file(model);
  const std::string latest_before = read_file(dir_ / "ckpt/latest");
  auto result = run_with(
      {{"max_steps", "4"}, {"model.n_layer", "3"}, {"checkpoint.resume_from", "\"latest\""}});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("n_layer"), std::string::npos) << result.output;
  EXPECT_EQ(read_file(model), before);
  EXPECT_EQ(read_file(dir_ / "ckpt/latest"), latest_before);
  EXPECT_TRUE(io::verify_checkpoint(dir_ / "ckpt/step_00000002").ok());
}

// `latest` names a checkpoint whose manifest is broken and no other one verifies: the
// worker refuses (bad input, naming the file) instead of training again from step 1
// over the old metrics. A folder without any checkpoint still starts fresh.
TEST_F(WorkerErrorsTest, UnreadableLatestCheckpointIsRefusedNotRestartedFromScratch) {
  ASSERT_EQ(run_with({{"max_steps", "3"}}).exit_code, 0);
  const std::string metrics_before = read_file(dir_ / "metrics.jsonl");
  const std::string manifest = dir_ / "ckpt/step_00000003/manifest.json";
  write_file(manifest, read_file(manifest).substr(0, 20));
  auto result = run_with({{"max_steps", "5"}, {"checkpoint.resume_from", "\"latest\""}});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  for (const char* words : {"holds checkpoints but none of them can be read",
                            "step_00000003: manifest.json is not valid JSON"}) {
    EXPECT_NE(result.output.find(words), std::string::npos) << words << ": " << result.output;
  }
  EXPECT_EQ(read_file(dir_ / "metrics.jsonl"), metrics_before);

  // Nothing was ever saved under ckpt_new (only a crashed writer's temp folder): fresh start.
  std::filesystem::create_directories(dir_ / "ckpt_new/.tmp-step_00000001-999999");
  auto fresh = run_with({{"max_steps", "2"},
                         {"checkpoint.dir", "\"ckpt_new\""},
                         {"metrics_path", "\"fresh.jsonl\""},
                         {"checkpoint.resume_from", "\"latest\""}});
  EXPECT_EQ(fresh.exit_code, 0) << fresh.output;
  EXPECT_EQ(read_metrics(dir_ / "fresh.jsonl").size(), 2u);
}

// The saved data position means the same batches only on the same data: a resume after
// data.train changed size (a shard added to a glob, a file rewritten) is refused, naming
// both sizes, instead of continuing on other batches; on the same data it resumes.
TEST_F(WorkerErrorsTest, ResumeOnDataOfAnotherSizeIsRefused) {
  ASSERT_EQ(run_with({{"max_steps", "2"}}).exit_code, 0);
  const std::string corpus = read_file(dir_ / "corpus.txt");
  write_file(dir_ / "corpus.txt", corpus + make_corpus(3000));
  auto result = run_with({{"max_steps", "4"}, {"checkpoint.resume_from", "\"latest\""}});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  const std::string sizes = "data.train held " + std::to_string(corpus.size()) +
                            " tokens when it was written and holds " +
                            std::to_string(corpus.size() + 3000) + " now";
  EXPECT_NE(result.output.find(sizes), std::string::npos) << result.output;
  write_file(dir_ / "corpus.txt", corpus);
  auto resumed = run_with({{"max_steps", "4"}, {"checkpoint.resume_from", "\"latest\""}});
  EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_EQ(read_metrics(dir_ / "metrics.jsonl").size(), 4u);
}

// A state.json the manifest vouches for but whose contents cannot be right: refused as
// bad input naming the field and what was expected, not resumed from the wrong place.
struct StateCase {
  std::string name, from, to;
  std::vector<std::string> expected;
};

TEST_F(WorkerErrorsTest, DamagedCheckpointStateIsRefusedNamingTheField) {
  ASSERT_EQ(run_with({{"max_steps", "2"}}).exit_code, 0);
  const std::string state = read_file(dir_ / "ckpt/step_00000002/state.json");
  ASSERT_NE(state.find("\"format_version\": 1,"), std::string::npos) << state;
  ASSERT_NE(state.find("\"step\": \"2\","), std::string::npos) << state;
  ASSERT_NE(state.find("\"tokens_per_update\": \"128\","), std::string::npos) << state;
  ASSERT_NE(state.find("\"optimizer.safetensors\""), std::string::npos) << state;
  ASSERT_NE(state.find("\"updates_applied\": \"2\""), std::string::npos) << state;
  const std::vector<StateCase> cases = {
      {"more_updates_than_steps",
       "\"updates_applied\": \"2\"",
       "\"updates_applied\": \"3\"",
       {"updates_applied is 3", "expected 0 to step (2)"}},
      {"newer_format",
       "\"format_version\": 1,",
       "\"format_version\": 2,",
       {"format_version is 2", "reads format_version 1"}},
      {"no_format",
       "\"format_version\": 1,",
       "",
       {"format_version is 0", "reads format_version 1"}},
      {"zero_batch",
       "\"tokens_per_update\": \"128\",",
       "",
       {"tokens_per_update is 0", "expected > 0"}},
      {"negative_batch",
       "\"tokens_per_update\": \"128\",",
       "\"tokens_per_update\": \"-128\",",
       {"tokens_per_update is -128", "expected > 0"}},
      {"other_step",
       "\"step\": \"2\",",
       "\"step\": \"1\",",
       {"step is 1", "expected 2, the step of manifest.json"}},
      {"escaping_file",
       "\"optimizer.safetensors\"",
       "\"../moments.safetensors\"",
       {"optimizer_files names \"../moments.safetensors\"", "listed in manifest.json"}},
      {"unlisted_file",
       "\"optimizer.safetensors\"",
       "\"moments.safetensors\"",
       {"optimizer_files names \"moments.safetensors\"", "listed in manifest.json"}},
  };
  for (const StateCase& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string root = dir_ / ("ckpt_" + c.name);
    std::filesystem::copy(dir_ / "ckpt", root, std::filesystem::copy_options::recursive);
    const std::string step_dir = root + "/step_00000002";
    // The files the damaged names point at exist and hold the real moments, so only the
    // check of the name can refuse them.
    std::filesystem::copy_file(step_dir + "/optimizer.safetensors", root + "/moments.safetensors");
    std::filesystem::copy_file(step_dir + "/optimizer.safetensors",
                               step_dir + "/moments.safetensors");
    std::string damaged = state;
    damaged.replace(damaged.find(c.from), c.from.size(), c.to);  // the first: not the spec's
    write_file(step_dir + "/state.json", damaged);
    ASSERT_NO_THROW(reseal_manifest(step_dir, "state.json"));
    auto result = run_with({{"max_steps", "4"},
                            {"checkpoint.dir", "\"ckpt_" + c.name + "\""},
                            {"metrics_path", "\"" + c.name + ".jsonl\""},
                            {"checkpoint.resume_from", "\"latest\""}});
    EXPECT_EQ(result.exit_code, 2) << result.output;
    EXPECT_NE(result.output.find("step_00000002/state.json"), std::string::npos) << result.output;
    for (const std::string& words : c.expected) {
      EXPECT_NE(result.output.find(words), std::string::npos) << words << ": " << result.output;
    }
  }
}

// A checkpoint in a folder of any name, its state.json and manifest.json agreeing on a
// negative step: it was resumed, training "steps" -2, -1 and 0 at negative learning rates
// until Adam's bias correction gave NaN. It is refused, naming the step.
TEST_F(WorkerErrorsTest, CheckpointOfNegativeStepIsRefused) {
  ASSERT_EQ(run_with({{"max_steps", "2"}}).exit_code, 0);
  const std::string step_dir = dir_ / "ckpt/mine";
  std::filesystem::copy(dir_ / "ckpt/step_00000002", step_dir);
  std::string state = read_file(step_dir + "/state.json");
  for (const auto& [from, to] :
       {std::pair<std::string, std::string>{"\"step\": \"2\",", "\"step\": \"-3\","},
        {",\n \"updates_applied\": \"2\"", ""}}) {
    ASSERT_NE(state.find(from), std::string::npos) << state;
    state.replace(state.find(from), from.size(), to);
  }
  std::string manifest = read_file(step_dir + "/manifest.json");
  ASSERT_NE(manifest.find("\"step\": 2,"), std::string::npos) << manifest;
  manifest.replace(manifest.find("\"step\": 2,"), 10, "\"step\": -3,");
  write_file(step_dir + "/manifest.json", manifest);
  write_file(step_dir + "/state.json", state);
  ASSERT_NO_THROW(reseal_manifest(step_dir, "state.json"));
  auto result = run_with({{"max_steps", "4"}, {"checkpoint.resume_from", "\"ckpt/mine\""}});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("mine/state.json: step is -3; expected >= 0"), std::string::npos)
      << result.output;
}

// A resumed run keeps the checkpoint's effective batch; a spec asking for another one
// (directly, or through grad_accum_steps) is refused naming both, not ignored.
TEST_F(WorkerErrorsTest, ResumeWithAnotherTokensPerUpdateIsRefusedNamingBoth) {
  ASSERT_EQ(run_with({{"max_steps", "2"}}).exit_code, 0);  // 128 tokens per update, K=4
  auto resume_with = [&](const std::string& field, const std::string& value) {
    std::map<std::string, std::string> overrides = {{"max_steps", "4"},
                                                    {"batch.tokens_per_update", ""},
                                                    {"checkpoint.resume_from", "\"latest\""}};
    overrides[field] = value;
    return run_with(overrides);
  };
  auto larger = resume_with("batch.tokens_per_update", "256");
  EXPECT_EQ(larger.exit_code, 2) << larger.output;
  for (const char* words :
       {"trained with tokens_per_update 128", "the spec asks for batch.tokens_per_update 256",
        "set batch.tokens_per_update to 128"}) {
    EXPECT_NE(larger.output.find(words), std::string::npos) << words << ": " << larger.output;
  }
  auto fewer_steps = resume_with("batch.grad_accum_steps", "2");
  EXPECT_EQ(fewer_steps.exit_code, 2) << fewer_steps.output;
  for (const char* words : {"trained with tokens_per_update 128",
                            "batch.grad_accum_steps 2 on 1 ranks, i.e. tokens_per_update 64"}) {
    EXPECT_NE(fewer_steps.output.find(words), std::string::npos)
        << words << ": " << fewer_steps.output;
  }
  // The same effective batch, said with grad_accum_steps, resumes.
  auto same = resume_with("batch.grad_accum_steps", "4");
  EXPECT_EQ(same.exit_code, 0) << same.output;
  EXPECT_NE(same.output.find("resumed from"), std::string::npos) << same.output;
}

// Bytes a directory's files take on a tmpfs (whole 4 KiB pages).
size_t pages_bytes(const std::filesystem::path& dir) {
  size_t total = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) total += (entry.file_size() + 4095) / 4096 * 4096;
  }
  return total;
}

// The disk fills up while a checkpoint is written: the worker stops with a runtime failure
// (exit 1, which accumd retries; not 2, bad input) naming the error and the file, leaves no
// directory that looks like a checkpoint and no temp files, and `latest` still names the
// previous complete one. Once there is space again, resuming from it finishes the job with
// the same bits as a run the disk never interrupted.
TEST_F(WorkerErrorsTest, FullDiskDuringACheckpointLosesNothing) {
  const std::map<std::string, std::string> job = {
      {"max_steps", "6"}, {"checkpoint.every_steps", "2"}, {"checkpoint.keep_last", "5"}};
  auto with = [&](std::map<std::string, std::string> overrides) {
    overrides.insert(job.begin(), job.end());
    return overrides;
  };
  // The run the disk never interrupts, on the ordinary disk.
  ASSERT_EQ(run_with(with({{"checkpoint.dir", "\"ref_ckpt\""},
                           {"metrics_path", "\"ref_metrics.jsonl\""}}))
                .exit_code,
            0);
  const size_t checkpoint_bytes = pages_bytes(dir_ / "ref_ckpt/step_00000002");
  ASSERT_GT(checkpoint_bytes, 0u);

  // Room for one and a half checkpoints: step 2's fits, step 4's runs out of space.
  ScratchTmpfs disk(dir_ / "disk", checkpoint_bytes * 3 / 2);
  ACCUM_SKIP_UNLESS_MOUNTED(disk);
  const std::string root = dir_ / "disk/ckpt";
  auto full = run_with(with({{"checkpoint.dir", "\"disk/ckpt\""}}));
  EXPECT_EQ(full.exit_code, 1) << full.output;
  for (const char* word :
       {"checkpoint of step 4", "No space left on device", "nothing of it was kept",
        "the last complete one", "disk/ckpt/step_00000002, is untouched"}) {
    EXPECT_NE(full.output.find(word), std::string::npos) << word << ": " << full.output;
  }
  std::vector<int64_t> steps;
  for (const auto& [step, path] : io::list_checkpoints(root)) steps.push_back(step);
  EXPECT_EQ(steps, std::vector<int64_t>{2});
  EXPECT_EQ(read_file(root + "/latest"), "step_00000002\n");
  EXPECT_TRUE(io::verify_checkpoint(root + "/step_00000002").ok());
  for (const auto& entry : std::filesystem::directory_iterator(root)) {
    EXPECT_NE(entry.path().filename().string().rfind(".tmp-", 0), 0u)
        << "left behind: " << entry.path();
  }

  // Space again: the job resumes from step 2 and ends where the uninterrupted run did.
  ASSERT_TRUE(disk.resize(checkpoint_bytes * 8)) << std::strerror(errno);
  auto resumed = run_with(
      with({{"checkpoint.dir", "\"disk/ckpt\""}, {"checkpoint.resume_from", "\"latest\""}}));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
  EXPECT_EQ(read_file(root + "/step_00000006/model.safetensors"),
            read_file(dir_ / "ref_ckpt/step_00000006/model.safetensors"));
  EXPECT_EQ(read_file(root + "/step_00000006/optimizer.safetensors"),
            read_file(dir_ / "ref_ckpt/step_00000006/optimizer.safetensors"));
}

// A checkpoint.dir that cannot hold checkpoints (a regular file, or a path under one) is
// bad input found before training, not a runtime failure at the first checkpoint.
TEST_F(WorkerErrorsTest, UnusableCheckpointDirIsRefusedBeforeTraining) {
  write_file(dir_ / "a_file", "not a directory\n");
  const std::string file = dir_ / "a_file";
  for (const std::string& ckpt : {std::string("a_file"), std::string("a_file/under/it")}) {
    SCOPED_TRACE(ckpt);
    auto result = run_with({{"checkpoint.dir", "\"" + ckpt + "\""}});
    EXPECT_EQ(result.exit_code, 2) << result.output;
    const std::string named =
        "checkpoint.dir " + (dir_ / ckpt) + " cannot hold checkpoints: " + file +
        (ckpt == "a_file" ? " exists and is not a directory" : " is not a directory");
    EXPECT_NE(result.output.find(named), std::string::npos) << result.output;
    EXPECT_NE(result.output.find("expected a directory this worker can create and write into"),
              std::string::npos)
        << result.output;
    EXPECT_FALSE(std::filesystem::exists(dir_ / "metrics.jsonl")) << "it trained first";
  }
  EXPECT_EQ(read_file(dir_ / "a_file"), "not a directory\n");
}

// A spec whose memory arithmetic exceeds all the memory the host has never fits, on any
// rerun: bad input (exit 2), which accumd does not restart.
TEST_F(WorkerErrorsTest, SpecThatCanNeverFitIsBadInput) {
  auto result =
      run_with({{"model.n_layer", "256"}, {"model.n_head", "256"}, {"model.d_model", "65536"}});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  for (const char* words :
       {"out of memory: the host has", "the host has in all: this spec never fits it"}) {
    EXPECT_NE(result.output.find(words), std::string::npos) << words << ": " << result.output;
  }
}

// An allocation that fails although the arithmetic fits (here an address-space limit the
// arithmetic cannot see, as memory another process holds) stays a runtime failure (exit 1):
// a restart may find the memory free. With two BLAS threads, as a user's default has: at
// exit OpenBLAS joins a thread that retries its buffer's allocation forever under the
// limit, so the worker must not wait for library teardown after the error (it used to spin
// there at 100% CPU and never exit).
TEST_F(WorkerErrorsTest, AllocationThatFailsWhereTheArithmeticFitsIsARuntimeFailure) {
  // About 1.6 GB of parameters, gradients and Adam state under a 1 GB address space.
  write_file(
      dir_ / "job.json",
      tiny_spec_json({{"model.n_layer", "8"}, {"model.n_head", "8"}, {"model.d_model", "1024"}}));
  auto result =
      run({"/bin/sh", "-c", "ulimit -v 1000000 && OMP_NUM_THREADS=2 exec \"$0\" --spec \"$1\"",
           worker_binary(), dir_ / "job.json"},
          60);
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("out of memory after the memory arithmetic fit"), std::string::npos)
      << result.output;
}

// An init_from file of another model is refused by its header, before its data is read: a
// 2 GB BF16 wte (a sparse file) would take 4 GB as fp32, which this address-space limit does
// not allow, so reading first would end in an out-of-memory (exit 1, restarted by accumd)
// instead of the bad input it is (exit 2, naming the tensor and both shapes).
TEST_F(WorkerErrorsTest, InitFromAnotherModelIsRefusedBeforeItsDataIsRead) {
  std::string header =
      R"({"wte.weight":{"dtype":"BF16","shape":[262144,4096],"data_offsets":[0,2147483648]}})";
  header.resize((header.size() + 7) / 8 * 8, ' ');
  std::string prefix(8, '\0');
  const uint64_t length = header.size();
  std::memcpy(prefix.data(), &length, 8);
  write_file(dir_ / "big.safetensors", prefix + header);
  std::filesystem::resize_file(dir_ / "big.safetensors", 8 + length + (uint64_t{1} << 31));
  write_file(dir_ / "job.json", tiny_spec_json({{"init_from", "\"big.safetensors\""}}));
  auto result =
      run({"/bin/sh", "-c", "ulimit -v 3000000 && OMP_NUM_THREADS=1 exec \"$0\" --spec \"$1\"",
           worker_binary(), dir_ / "job.json"},
          60);
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("tensor wte.weight has shape [262144, 4096], expected [256, 32]"),
            std::string::npos)
      << result.output;
}

// Resuming with max_steps below the checkpoint's step would train nothing and say it
// succeeded: refused, naming both numbers, with the checkpoint and the metrics untouched.
TEST_F(WorkerErrorsTest, ResumeWithMaxStepsBelowTheCheckpointIsRefused) {
  ASSERT_EQ(run_with({{"max_steps", "5"}}).exit_code, 0);
  const std::string metrics_before = read_file(dir_ / "metrics.jsonl");
  auto result = run_with({{"max_steps", "3"}, {"checkpoint.resume_from", "\"latest\""}});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  for (const char* words : {"max_steps 3 is below the checkpoint's step 5", "step_00000005",
                            "nothing to train; expected max_steps >= 5"}) {
    EXPECT_NE(result.output.find(words), std::string::npos) << words << ": " << result.output;
  }
  EXPECT_EQ(read_file(dir_ / "metrics.jsonl"), metrics_before);
  EXPECT_EQ(read_file(dir_ / "ckpt/latest"), "step_00000005\n");
}

TEST_F(WorkerErrorsTest, MissingSpecFileAndBadArgumentsExitNonZero) {
  EXPECT_EQ(run({worker_binary(), "--spec", dir_ / "absent.json"}).exit_code, 2);
  auto result = run({worker_binary(), "--bogus"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("--bogus"), std::string::npos);
  // A flag without its value says so, rather than calling the flag unknown.
  result = run({worker_binary(), "--spec"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("--spec needs a value"), std::string::npos) << result.output;
  // Something that is no spec (here endless zeros) is refused after 16 MiB, not read whole.
  result = run({worker_binary(), "--spec", "/dev/zero"}, 60);
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("spec file /dev/zero holds more than 16 MiB; expected a JSON job "
                               "spec"),
            std::string::npos)
      << result.output;
}

// A second run started on a checkpoint.dir that a run is still training into (a job launched
// twice, two specs sharing a folder) would resume from the first's checkpoints and the two
// would replace each other's step directories: it is refused, naming the folder and the
// holder, and the first run is not disturbed. Once the first has ended, the folder is free.
TEST_F(WorkerErrorsTest, SecondRunInACheckpointDirInUseIsRefused) {
  const std::map<std::string, std::string> first_run = {{"max_steps", "100000"},
                                                        {"checkpoint.every_steps", "1"},
                                                        {"optimizer.schedule", "\"constant\""},
                                                        {"optimizer.warmup_steps", "0"}};
  write_file(dir_ / "first.json", tiny_spec_json(first_run));
  const pid_t first = spawn({worker_binary(), "--spec", dir_ / "first.json"}, dir_ / "first.log");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (io::list_checkpoints(dir_ / "ckpt").empty() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_FALSE(io::list_checkpoints(dir_ / "ckpt").empty()) << read_file(dir_ / "first.log");

  write_file(dir_ / "second.json", tiny_spec_json({{"max_steps", "3"},
                                                   {"metrics_path", "\"second.jsonl\""},
                                                   {"checkpoint.resume_from", "\"latest\""}}));
  const RunResult second = run({worker_binary(), "--spec", dir_ / "second.json"});
  EXPECT_EQ(second.exit_code, 1) << second.output;  // transient: accumd retries it later
  for (const std::string& words :
       {std::string("checkpoint.dir ") + (dir_ / "ckpt") + " is in use by another training run",
        "pid " + std::to_string(first) + " on host",
        std::string("give this one another checkpoint.dir")}) {
    EXPECT_NE(second.output.find(words), std::string::npos) << words << ": " << second.output;
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ / "second.jsonl"));

  ASSERT_EQ(kill(first, SIGTERM), 0);
  ASSERT_EQ(wait_exit(first, 120), 0) << read_file(dir_ / "first.log");
  const auto metrics = read_metrics(dir_ / "metrics.jsonl");
  ASSERT_FALSE(metrics.empty());
  EXPECT_EQ(io::list_checkpoints(dir_ / "ckpt").back().first, metrics.back().step);
  // The folder is free again: the second run resumes from the first's last checkpoint.
  write_file(dir_ / "second.json",
             tiny_spec_json({{"max_steps", std::to_string(metrics.back().step + 1)},
                             {"metrics_path", "\"second.jsonl\""},
                             {"checkpoint.resume_from", "\"latest\""}}));
  const RunResult after = run({worker_binary(), "--spec", dir_ / "second.json"});
  EXPECT_EQ(after.exit_code, 0) << after.output;
  EXPECT_EQ(read_metrics(dir_ / "second.jsonl").size(), 1u);
}

}  // namespace
}  // namespace accum::testing
