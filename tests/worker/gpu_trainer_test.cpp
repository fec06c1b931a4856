// The trainer on the CUDA back end (ctest label `gpu`): accumulation equivalence,
// bit-identical resume, the memory report and the out-of-memory advice, run through the
// real accum-worker. SKIPPED with the reason when no GPU is visible. tests/simt runs it
// again on the SIMT emulator (simt.GpuTrainerTest.*).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "tests/common/same_bytes.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/worker/worker_test_util.h"

namespace accum::testing {
namespace {

class GpuTrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
#ifdef ACCUM_WORKER_BINARY_DEFAULT
    // Built for the SIMT emulator (tests/simt): run the worker built against it.
    setenv("ACCUM_WORKER_BINARY", ACCUM_WORKER_BINARY_DEFAULT, 0);
#endif
    std::string why;
    if (!kernels::backend_available(kernels::DeviceKind::kCuda, &why)) GTEST_SKIP() << why;
    write_file(dir_ / "corpus.txt", make_corpus(60000));
  }
  RunResult train(const std::string& name, std::map<std::string, std::string> overrides) {
    overrides["device"] = "\"CUDA\"";
    overrides["precision"] = "\"BF16\"";
    write_file(dir_ / (name + ".json"), tiny_spec_json(overrides));
    return run({worker_binary(), "--spec", dir_ / (name + ".json")});
  }
  // Trains 6 steps straight ("s"), calls `after_straight`, then 3 steps and a resume to 6
  // ("r"), and expects the resumed run to end with the straight run's losses and weights, bit
  // for bit. `extra`: more spec fields for every run; `outputs`, if given, gets the runs'.
  void expect_resume_is_bit_identical(
      const std::function<void()>& after_straight = [] {},
      const std::map<std::string, std::string>& extra = {},
      std::vector<std::string>* outputs = nullptr) {
    auto with = [&](std::map<std::string, std::string> fields) {
      fields.insert(extra.begin(), extra.end());
      return fields;
    };
    auto straight = train("s", with({{"max_steps", "6"},
                                     {"checkpoint.dir", "\"ckpt_s\""},
                                     {"metrics_path", "\"s.jsonl\""}}));
    ASSERT_EQ(straight.exit_code, 0) << straight.output;
    after_straight();
    auto first = train("r1", with({{"max_steps", "3"},
                                   {"checkpoint.dir", "\"ckpt_r\""},
                                   {"metrics_path", "\"r.jsonl\""}}));
    ASSERT_EQ(first.exit_code, 0) << first.output;
    auto second = train("r2", with({{"max_steps", "6"},
                                    {"checkpoint.dir", "\"ckpt_r\""},
                                    {"metrics_path", "\"r.jsonl\""},
                                    {"checkpoint.resume_from", "\"latest\""}}));
    ASSERT_EQ(second.exit_code, 0) << second.output;
    if (outputs) *outputs = {straight.output, first.output, second.output};
    const auto s = read_metrics(dir_ / "s.jsonl"), r = read_metrics(dir_ / "r.jsonl");
    ASSERT_EQ(s.size(), 6u);
    ASSERT_EQ(r.size(), 6u);
    for (size_t i = 0; i < 6; ++i) EXPECT_EQ(s[i].loss, r[i].loss) << "step " << i + 1;
    EXPECT_TRUE(same_bytes(dir_ / "ckpt_s/step_00000006/model.safetensors",
                           dir_ / "ckpt_r/step_00000006/model.safetensors"));
  }
  TempDir dir_;
};

TEST_F(GpuTrainerTest, EightMicroBatchesOfOneTrainLikeOneBatchOfEight) {
  auto a = train("a", {{"batch.micro_batch_size", "1"},
                       {"batch.tokens_per_update", ""},
                       {"batch.grad_accum_steps", "8"},
                       {"max_steps", "5"},
                       {"checkpoint.dir", "\"ckpt_a\""},
                       {"metrics_path", "\"a.jsonl\""}});
  ASSERT_EQ(a.exit_code, 0) << a.output;
  auto b = train("b", {{"batch.micro_batch_size", "8"},
                       {"batch.tokens_per_update", ""},
                       {"batch.grad_accum_steps", "1"},
                       {"max_steps", "5"},
                       {"checkpoint.dir", "\"ckpt_b\""},
                       {"metrics_path", "\"b.jsonl\""}});
  ASSERT_EQ(b.exit_code, 0) << b.output;
  const auto ma = read_metrics(dir_ / "a.jsonl"), mb = read_metrics(dir_ / "b.jsonl");
  ASSERT_EQ(ma.size(), 5u);
  ASSERT_EQ(mb.size(), 5u);
  // bf16 activations, fp32 accumulation: the split only changes fp32 summation order.
  for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(ma[i].loss, mb[i].loss, 1e-3 * mb[i].loss);
  EXPECT_LE(relative_l2(read_weights(dir_ / "ckpt_a/step_00000005/model.safetensors"),
                        read_weights(dir_ / "ckpt_b/step_00000005/model.safetensors")),
            1e-3);
}

TEST_F(GpuTrainerTest, ResumeIsBitIdentical) { expect_resume_is_bit_identical(); }

// An odd vocabulary (257 byte tokens and one more, as GPT-2's 50257 is odd): the LM head runs
// over 320 padded rows on CUDA, while the checkpoints and the exported weights keep 257.
TEST_F(GpuTrainerTest, ResumeIsBitIdenticalWithAnOddVocabulary) {
  expect_resume_is_bit_identical([] {}, {{"model.vocab_size", "257"}});
  EXPECT_EQ(read_weights(dir_ / "ckpt_s/step_00000006/model.safetensors").size(),
            size_t(gpt2_parameter_count(2, 32, 257, 16)));
}

// ACCUM_CUDA_SIDE_STREAM=1 through the real worker: its start line names the path
// ("cuda+side-stream back end"), and 4 steps end with the losses and weights of the
// one-stream run, bit for bit (the backward's weight gradients only run elsewhere).
TEST_F(GpuTrainerTest, SideStreamTrainsTheWorkerToTheSameBits) {
  auto run_named = [&](const std::string& name) {
    return train(name, {{"max_steps", "4"},
                        {"checkpoint.dir", "\"ckpt_" + name + "\""},
                        {"checkpoint.every_steps", "4"},
                        {"metrics_path", "\"" + name + ".jsonl\""}});
  };
  RunResult one, side;
  kernels::gpu_testing::with_env("ACCUM_CUDA_SIDE_STREAM", "0", [&] { one = run_named("one"); });
  kernels::gpu_testing::with_env("ACCUM_CUDA_SIDE_STREAM", "1", [&] { side = run_named("side"); });
  ASSERT_EQ(one.exit_code, 0) << one.output;
  ASSERT_EQ(side.exit_code, 0) << side.output;
  EXPECT_NE(one.output.find("| cuda back end |"), std::string::npos) << one.output;
  EXPECT_NE(side.output.find("| cuda+side-stream back end |"), std::string::npos) << side.output;
  const auto a = read_metrics(dir_ / "one.jsonl"), b = read_metrics(dir_ / "side.jsonl");
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(a[i].loss, b[i].loss) << "step " << i + 1;
    EXPECT_EQ(a[i].grad_norm, b[i].grad_norm) << "step " << i + 1;
  }
  EXPECT_TRUE(same_bytes(dir_ / "ckpt_one/step_00000004/model.safetensors",
                         dir_ / "ckpt_side/step_00000004/model.safetensors"));
}

// ACCUM_CUBLASLT_ALGOS=FILE through the real worker: the first run times cuBLASLt's
// candidates and keeps its choices in FILE; a run cut at step 3 and resumed reads them (FILE
// does not change) and ends with the uninterrupted run's bits, though a choice timed again
// could differ.
TEST_F(GpuTrainerTest, ResumeWithKeptCublasLtAlgorithmsIsBitIdentical) {
  const std::string algos = dir_ / "algos.tsv";
  std::string kept;
  kernels::gpu_testing::with_env("ACCUM_CUBLASLT_ALGOS", algos.c_str(), [&] {
    expect_resume_is_bit_identical([&] {
      kept = read_existing_file(algos);
      EXPECT_NE(kept.find("\nmachine\t"), std::string::npos) << kept;
    });
  });
  EXPECT_TRUE(holds_bytes(algos, kept)) << "a later run timed the algorithms again";
}

// cuda.keep_cublaslt_algorithms: the worker times cuBLASLt's candidates and keeps its choices
// in checkpoint.dir, in a file named for the machine (cublaslt_algos_<GPU>_<cuBLASLt>.tsv),
// and a run resumed from that folder reads them (the file does not change). The resumed runs
// get the straight run's file before they start, so they use its choices and must end with
// its bits. ACCUM_CUBLASLT_ALGOS, when set, names the file instead.
TEST_F(GpuTrainerTest, SpecKeepsCublasLtAlgorithmsBesideTheCheckpoints) {
  auto kept_files = [&](const std::string& folder) {
    std::vector<std::string> names;
    if (!std::filesystem::exists(folder)) return names;
    for (const auto& entry : std::filesystem::directory_iterator(folder)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("cublaslt_algos_", 0) == 0) names.push_back(name);
    }
    return names;
  };
  std::string name, kept;
  std::vector<std::string> outputs;
  expect_resume_is_bit_identical(
      [&] {
        const auto names = kept_files(dir_ / "ckpt_s");
        ASSERT_EQ(names.size(), 1u) << "one file for the one machine";
        name = names[0];
        kept = read_existing_file(dir_ / ("ckpt_s/" + name));
        EXPECT_NE(kept.find("\nmachine\t"), std::string::npos) << kept;
        EXPECT_NE(kept.find(" NN "), std::string::npos) << "no GEMM choice kept: " << kept;
        std::filesystem::create_directories(dir_ / "ckpt_r");
        write_file(dir_ / ("ckpt_r/" + name), kept);
      },
      {{"cuda.keep_cublaslt_algorithms", "true"}}, &outputs);
  EXPECT_TRUE(holds_bytes(dir_ / ("ckpt_r/" + name), kept)) << "a resumed run timed them again";
  EXPECT_EQ(kept_files(dir_ / "ckpt_r").size(), 1u);
  ASSERT_EQ(outputs.size(), 3u);
  EXPECT_NE(outputs[2].find("cuBLASLt algorithms: kept in " + (dir_ / "ckpt_r")), std::string::npos)
      << outputs[2];

  const std::string named = dir_ / "named.tsv";
  RunResult overridden;
  kernels::gpu_testing::with_env("ACCUM_CUBLASLT_ALGOS", named.c_str(), [&] {
    overridden = train("o", {{"max_steps", "1"},
                             {"checkpoint.dir", "\"ckpt_o\""},
                             {"metrics_path", "\"o.jsonl\""},
                             {"cuda.keep_cublaslt_algorithms", "true"}});
  });
  ASSERT_EQ(overridden.exit_code, 0) << overridden.output;
  EXPECT_TRUE(std::filesystem::exists(named)) << overridden.output;
  EXPECT_TRUE(kept_files(dir_ / "ckpt_o").empty());
}

// On a GPU the metrics give MFU: model_tflops over the card's dense peak, here the one
// ACCUM_PEAK_TFLOPS names (the emulator is in no table, and a test must know the peak);
// a value that is not a positive number is refused, naming the variable.
TEST_F(GpuTrainerTest, MetricsGiveMfuAgainstTheDevicePeak) {
  RunResult result, refused;
  kernels::gpu_testing::with_env("ACCUM_PEAK_TFLOPS", "0.25", [&] {
    result = train("mfu", {{"max_steps", "2"}, {"metrics_path", "\"mfu.jsonl\""}});
  });
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto metrics = read_metrics(dir_ / "mfu.jsonl");
  ASSERT_EQ(metrics.size(), 2u);
  for (const auto& line : metrics) {
    const double tflops = metric_value(line, "model_tflops");
    EXPECT_GT(tflops, 0) << line.raw;
    EXPECT_NEAR(metric_value(line, "mfu"), tflops / 0.25, 1e-9 + 1e-6 * tflops / 0.25) << line.raw;
  }
  kernels::gpu_testing::with_env("ACCUM_PEAK_TFLOPS", "fast", [&] {
    refused = train("refused", {{"max_steps", "1"}, {"metrics_path", "\"refused.jsonl\""}});
  });
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.output.find("ACCUM_PEAK_TFLOPS='fast': expected the device's dense peak in "
                                "TFLOP/s, a positive number"),
            std::string::npos)
      << refused.output;
}

TEST_F(GpuTrainerTest, MemoryReportAndOutOfMemoryAdvice) {
  auto small = train(
      "small",
      {{"max_steps", "1"}, {"checkpoint.dir", "\"ckpt_m\""}, {"metrics_path", "\"m.jsonl\""}});
  ASSERT_EQ(small.exit_code, 0) << small.output;
  // The arithmetic of the gradient-accumulation note next to what the device says the model
  // took: all of the arithmetic but the scratch that grows in the first micro-step, so at
  // most the arithmetic's total and more than its parameters, gradients and Adam state.
  const std::regex report(
      "memory: params ([0-9.]+ [MG]B) .* = ([0-9.]+ [MG]B) \\| the device: ([0-9.]+ [MG]B) taken "
      "by the model \\([0-9.]+ of [0-9.]+ GB in use\\)");
  std::smatch found;
  ASSERT_TRUE(std::regex_search(small.output, found, report)) << small.output;
  auto bytes = [](const std::string& human) {  // memory_plan.cpp's human_bytes, read back
    return std::stod(human) * (human.find("GB") != std::string::npos ? 1e9 : 1e6);
  };
  const double params = bytes(found[1]), total = bytes(found[2]), taken = bytes(found[3]);
  EXPECT_GT(taken, 4 * params) << found[0];           // fp32 params, gradients, Adam m and v
  EXPECT_LE(taken, total * 1.001 + 1e5) << found[0];  // the printed numbers are rounded
  // 4M-token micro-batches of a 50k vocabulary need 420 GB of logits, more than any one GPU
  // has; the memory arithmetic is checked before the data is read. (1M-token micro-batches,
  // 105 GB of logits, fit the arithmetic on an H200's 141 GB: the run then stopped at the
  // data instead, which holds 60000 tokens.)
  auto huge = train("huge", {{"model.vocab_size", "50000"},
                             {"model.max_seq_len", "1024"},
                             {"batch.seq_len", "1024"},
                             {"batch.micro_batch_size", "4096"},
                             {"batch.tokens_per_update", "8388608"},
                             {"checkpoint.dir", "\"ckpt_h\""},
                             {"metrics_path", "\"h.jsonl\""}});
  EXPECT_NE(huge.exit_code, 0);
  EXPECT_NE(huge.output.find("out of memory"), std::string::npos) << huge.output;
  EXPECT_NE(huge.output.find("largest micro_batch_size that fits is"), std::string::npos)
      << huge.output;
  EXPECT_NE(huge.output.find("keeps tokens_per_update 8388608"), std::string::npos) << huge.output;
}

// Running out of device memory anywhere (the back end's workspace, the model, the reducer,
// Adam's state, scratch that grows in the first micro-step) ends the run with the memory
// arithmetic and advice, never a bare bad_alloc or cudaMalloc error; and the micro-batch the
// advice names trains on the same device. Device sizes are swept from just below the
// back end's 32 MiB cuBLASLt workspace upward until runs fit. Needs the emulator's device
// size (ACCUM_SIMT_DEVICE_BYTES): a real GPU's memory cannot be made smaller.
TEST_F(GpuTrainerTest, OutOfMemoryAnywhereGivesAdviceThatFits) {
#ifndef ACCUM_WORKER_BINARY_DEFAULT
  GTEST_SKIP() << "needs the SIMT emulator's ACCUM_SIMT_DEVICE_BYTES (a GPU's memory size is "
                  "fixed); simt.GpuTrainerTest.OutOfMemoryAnywhereGivesAdviceThatFits runs it";
#else
  // The emulated device's size for the workers `train` starts.
  auto train_on = [&](size_t bytes, const std::string& name,
                      const std::map<std::string, std::string>& overrides) {
    RunResult result;
    kernels::gpu_testing::with_env("ACCUM_SIMT_DEVICE_BYTES", std::to_string(bytes).c_str(),
                                   [&] { result = train(name, overrides); });
    return result;
  };
  std::map<std::string, std::string> spec = {{"model.max_seq_len", "64"},
                                             {"batch.seq_len", "64"},
                                             {"batch.micro_batch_size", "8"},
                                             {"batch.tokens_per_update", "1024"},
                                             {"max_steps", "1"}};
  const std::regex advice(
      "the largest micro_batch_size that fits is ([0-9]+); "
      "micro_batch_size ([0-9]+) with grad_accum_steps ([0-9]+)");
  int runs = 0, no_backend = 0, none_fits = 0, advised = 0, fitted = 0;
  for (size_t bytes = (size_t{32} << 20) - 100000; fitted < 2 && runs < 40;
       bytes += 400000, ++runs) {
    SCOPED_TRACE("device of " + std::to_string(bytes) + " bytes");
    const std::string name = "oom" + std::to_string(runs);
    spec["checkpoint.dir"] = "\"ckpt_" + name + "\"";
    spec["metrics_path"] = "\"" + name + ".jsonl\"";
    const RunResult result = train_on(bytes, name, spec);
    if (result.exit_code == 0) {
      ++fitted;
      continue;
    }
    ASSERT_NE(result.output.find("out of memory"), std::string::npos) << result.output;
    EXPECT_EQ(result.output.find("bad_alloc"), std::string::npos) << result.output;
    EXPECT_EQ(result.output.find("cudaMalloc"), std::string::npos) << result.output;
    std::smatch m;
    if (!std::regex_search(result.output, m, advice)) {
      if (result.output.find("out of memory creating the back end") != std::string::npos) {
        ++no_backend;  // the workspace does not fit
      } else {
        EXPECT_NE(result.output.find("even micro_batch_size 1 needs"), std::string::npos)
            << result.output;
        ++none_fits;
      }
      continue;
    }
    ++advised;
    EXPECT_LT(std::stoi(m[1]), 8) << result.output;
    auto smaller = spec;
    smaller["batch.micro_batch_size"] = m[2];
    smaller["batch.tokens_per_update"] = "";
    smaller["batch.grad_accum_steps"] = m[3];
    const RunResult rerun = train_on(bytes, name + "_advised", smaller);
    EXPECT_EQ(rerun.exit_code, 0) << "the advice was: " << m[0] << "\n" << rerun.output;
  }
  // Every regime was met: no back end, no micro-batch fits, a smaller one fits, the spec's.
  EXPECT_GT(no_backend, 0);
  EXPECT_GT(none_fits, 0);
  EXPECT_GT(advised, 0);
  EXPECT_EQ(fitted, 2);
  // The last allocation to fail is the scratch the first micro-step grows: find the
  // smallest device the spec trains on (to 1 KB) and run it on one 1 KB smaller.
  size_t low = (size_t{32} << 20), high = (size_t{32} << 20) + 8000000;
  for (int i = 0; high - low > 1000; ++i) {
    const size_t mid = low + (high - low) / 2;
    spec["checkpoint.dir"] = "\"ckpt_b" + std::to_string(i) + "\"";
    spec["metrics_path"] = "\"b" + std::to_string(i) + ".jsonl\"";
    (train_on(mid, "bisect" + std::to_string(i), spec).exit_code == 0 ? high : low) = mid;
  }
  spec["checkpoint.dir"] = "\"ckpt_edge\"";
  spec["metrics_path"] = "\"edge.jsonl\"";
  const RunResult edge = train_on(high - 1000, "edge", spec);
  EXPECT_NE(edge.exit_code, 0);
  EXPECT_TRUE(std::regex_search(edge.output, advice)) << edge.output;
  EXPECT_EQ(edge.output.find("cudaMalloc"), std::string::npos) << edge.output;
#endif
}

// A device that reports more free memory than it can give (a real allocator rounds up):
// the arithmetic fits, an allocation fails, and the advice starts below the spec's B.
TEST_F(GpuTrainerTest, OutOfMemoryAfterTheArithmeticFitAdvisesASmallerMicroBatch) {
#ifndef ACCUM_WORKER_BINARY_DEFAULT
  GTEST_SKIP() << "needs the SIMT emulator's ACCUM_SIMT_MEMINFO_OVERSTATE (a GPU's report "
                  "cannot be made wrong); simt.GpuTrainerTest runs it";
#else
  // 32 MiB of workspace + 2.5 MB: the spec below needs about 4 MB.
  using kernels::gpu_testing::with_env;
  RunResult result;
  with_env("ACCUM_SIMT_DEVICE_BYTES", std::to_string((size_t{32} << 20) + 2500000).c_str(), [&] {
    with_env("ACCUM_SIMT_MEMINFO_OVERSTATE", "8000000", [&] {
      result = train("over", {{"model.max_seq_len", "64"},
                              {"batch.seq_len", "64"},
                              {"batch.micro_batch_size", "8"},
                              {"batch.tokens_per_update", "1024"},
                              {"max_steps", "1"}});
    });
  });
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("out of memory after the memory arithmetic fit"), std::string::npos)
      << result.output;
  EXPECT_EQ(result.output.find("bad_alloc"), std::string::npos) << result.output;
  std::smatch m;
  const std::regex largest("the largest micro_batch_size that fits is ([0-9]+)");
  ASSERT_TRUE(std::regex_search(result.output, m, largest)) << result.output;
  EXPECT_LT(std::stoi(m[1]), 8) << result.output;
#endif
}

}  // namespace
}  // namespace accum::testing
