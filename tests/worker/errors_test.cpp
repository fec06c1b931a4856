// Bad input reaches the user as a clear error and a non-zero exit, and loses
// nothing: one test per error path of the worker's edge (the spec, data files, init_from,
// memory, the command line; checkpoints are in checkpoint_errors_test.cpp).
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
#include "tests/worker/worker_errors_fixture.h"
#include "tests/worker/worker_test_util.h"

namespace accum::testing {
namespace {

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

// Every op indexes a micro-batch's B*T rows with an int (kernels/backend.h). Each of the two
// bounds alone (2^20) let B*T reach 2^40: a spec of 2^31 tokens per micro-batch is bad input
// naming both numbers (on a host with memory for it, the ops would have run on overflowed
// ints), and 4096 tokens fewer is a valid spec.
TEST_F(WorkerErrorsTest, MicroBatchOfTwoToThe31TokensIsRefused) {
  auto result = run_with({{"model.max_seq_len", "4096"},
                          {"batch.seq_len", "4096"},
                          {"batch.micro_batch_size", "524288"}});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("batch.micro_batch_size"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("micro_batch_size*seq_len = 524288*4096 = 2147483648 tokens"),
            std::string::npos)
      << result.output;
  write_file(dir_ / "job.json", tiny_spec_json({{"model.max_seq_len", "4096"},
                                                {"batch.seq_len", "4096"},
                                                {"batch.micro_batch_size", "524287"}}));
  result = run({worker_binary(), "--spec", dir_ / "job.json", "--print-spec"});
  EXPECT_EQ(result.exit_code, 0) << result.output;
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

TEST_F(WorkerErrorsTest, MissingSpecFileAndBadArgumentsExitNonZero) {
  const std::string absent = dir_ / "absent.json";
  auto result = run({worker_binary(), "--spec", absent});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("cannot read spec file " + absent + ": No such file or directory"),
            std::string::npos)
      << result.output;
  result = run({worker_binary(), "--bogus"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("--bogus"), std::string::npos) << result.output;
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

}  // namespace
}  // namespace accum::testing
