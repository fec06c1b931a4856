// tests/gpu/cuda_ops_test.cpp — encoder, LayerNorm, matmul (cuBLASLt), GELU, residual and
// dtype conversion on CUDA against the CPU oracle (see op_harness.h for what is asserted).
// Shapes are deliberately ragged (rows not multiples of tiles, C both a multiple of 8 for
// the 16-byte vector path and not, element counts with a tail) so every code path runs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/device_peak.h"
#include "kernels/cuda/matmul_algos.h"
#include "tests/gpu/op_harness.h"

namespace accum::kernels::gpu_testing {
namespace {

void encoder_case(int B, int T, int C, int V) {
  const auto tokens = random_ints(size_t(B) * T, V, 1);  // V < B*T: tokens repeat
  const auto wte = random_bf16_values(size_t(V) * C, 2, 0.5f);
  const auto wpe = random_bf16_values(size_t(T) * C, 3, 0.5f);
  const auto dout = random_bf16_values(size_t(B) * T * C, 4);
  check_against_cpu(
      [&](Backend& be, const BackwardRuns& runs) {
        Buffer tok = upload_ints(be, tokens), wte_b = upload_act(be, wte),
               wpe_b = upload_act(be, wpe), dout_b = upload_act(be, dout);
        Buffer out = poisoned_act(be, size_t(B) * T * C);
        Buffer dwte(be, wte.size() * sizeof(float)), dwpe(be, wpe.size() * sizeof(float));
        be.encoder_forward(out.get(), static_cast<const int32_t*>(tok.get()), wte_b.get(),
                           wpe_b.get(), B, T, C);
        for (int call = 0; call < runs.calls; ++call) {
          be.encoder_backward(dwte.f32(), dwpe.f32(), dout_b.get(), tokens.data(), B, T, C);
        }
        return Outputs{{"out", download_act(be, out.get(), size_t(B) * T * C)},
                       {"dwte", download_f32(be, dwte.get(), wte.size())},
                       {"dwpe", download_f32(be, dwpe.get(), wpe.size())}};
      },
      kBf16Tolerance, {.added = {"dwte", "dwpe"}});
}

TEST(CudaOps, EncoderVectorized) {
  ACCUM_REQUIRE_CUDA();
  encoder_case(3, 37, 64, 50);
}

TEST(CudaOps, EncoderScalarChannels) {
  ACCUM_REQUIRE_CUDA();
  encoder_case(2, 19, 36, 11);
}

// with_sum: the backward also sums dinp (dinp_sum, the model's projection bias gradients).
void layernorm_case(int N, int C, bool with_sum = true) {
  const auto inp = random_bf16_values(size_t(N) * C, 10, 2.f, 0.3f);
  const auto weight = random_bf16_values(C, 11, 0.2f, 1.f);
  const auto bias = random_bf16_values(C, 12, 0.2f);
  const auto dout = random_bf16_values(size_t(N) * C, 13);
  check_against_cpu(
      [&](Backend& be, const BackwardRuns& runs) {
        Buffer inp_b = upload_act(be, inp), w = upload_act(be, weight), b = upload_act(be, bias),
               dout_b = upload_act(be, dout);
        Buffer out = poisoned_act(be, inp.size());
        Buffer mean = poisoned_f32(be, N), rstd = poisoned_f32(be, N);
        Buffer dinp(be, inp.size() * be.act_bytes());
        Buffer dweight = runs.param_grads(be, C), dbias = runs.param_grads(be, C);
        Buffer dinp_sum = runs.param_grads(be, C);
        be.layernorm_forward(out.get(), mean.f32(), rstd.f32(), inp_b.get(), w.get(), b.get(), N,
                             C);
        for (int call = 0; call < runs.calls; ++call) {
          be.layernorm_backward(dinp.get(), dweight.f32(), dbias.f32(),
                                with_sum ? dinp_sum.f32() : nullptr, dout_b.get(), inp_b.get(),
                                w.get(), mean.f32(), rstd.f32(), N, C, runs.mode(call));
        }
        Outputs outputs{{"out", download_act(be, out.get(), inp.size())},
                        {"mean", download_f32(be, mean.get(), N)},
                        {"rstd", download_f32(be, rstd.get(), N)},
                        {"dinp", download_act(be, dinp.get(), inp.size())},
                        {"dweight", download_f32(be, dweight.get(), C)},
                        {"dbias", download_f32(be, dbias.get(), C)}};
        if (with_sum) outputs["dinp_sum"] = download_f32(be, dinp_sum.get(), C);
        return outputs;
      },
      kBf16Tolerance, {.params = {"dweight", "dbias"}, .added = {"dinp"}});
}

TEST(CudaOps, LayerNormVectorized) {
  ACCUM_REQUIRE_CUDA();
  layernorm_case(131, 96);  // 131 rows: ragged warp blocks and reduction chunks
}

// 600 rows: 10 chunks of the column reduction, so every chunk lane of its second stage
// has work (the parameter gradients dweight, dbias).
TEST(CudaOps, LayerNormManyRows) {
  ACCUM_REQUIRE_CUDA();
  layernorm_case(600, 64);
}

// 2113 rows: 34 chunks of 64 rows, more than the 32 lanes of the column finalize's warp, so
// lanes 0 and 1 each add a second chunk.
TEST(CudaOps, LayerNormMoreChunksThanFinalizeLanes) {
  ACCUM_REQUIRE_CUDA();
  layernorm_case(2113, 64);
}

TEST(CudaOps, LayerNormScalarChannels) {
  ACCUM_REQUIRE_CUDA();
  layernorm_case(67, 50);
}

// The backward sums dweight/dbias in its dinp pass for C % 8 == 0 up to 1024 channels (4 x 256
// per warp), and with dinp_sum up to 768: 1000 leaves the last 256-channel group of every lane
// partly empty (fused without dinp_sum, two-pass with it); 768 fills 3 groups (fused with
// it, GPT-2 124M); 1032 is past both limits and takes the two-pass path (dinp kernel, then
// the column reduction).
TEST(CudaOps, LayerNormWideChannels) {
  ACCUM_REQUIRE_CUDA();
  layernorm_case(131, 1000, /*with_sum=*/false);
  layernorm_case(131, 1000);
  layernorm_case(70, 768);
  layernorm_case(70, 1032, /*with_sum=*/false);
  layernorm_case(70, 1032);
}

// ACCUM_LAYERNORM_GRADS=two_pass: the ablation's path, checked like the default.
TEST(CudaOps, LayerNormTwoPassParameterGradients) {
  ACCUM_REQUIRE_CUDA();
  with_env("ACCUM_LAYERNORM_GRADS", "two_pass", [] { layernorm_case(600, 64); });
}

// The fused backward takes the two-pass path's rows in the same order (warp w = row lane w
// of column_reduce.cuh) with the same expressions, so both give the same bits: switching the
// ablation on does not change a training run.
TEST(CudaOps, LayerNormFusedGradientsEqualTheTwoPassPath) {
  ACCUM_REQUIRE_CUDA();
  const int N = 600, C = 768;
  const auto inp = random_bf16_values(size_t(N) * C, 14, 2.f, 0.3f);
  const auto weight = random_bf16_values(C, 15, 0.2f, 1.f);
  const auto dout = random_bf16_values(size_t(N) * C, 16);
  const auto dinp0 = random_bf16_values(size_t(N) * C, 17);
  Backends backends;
  Backend& be = *backends.gpu;
  auto run = [&] {
    Buffer inp_b = upload_act(be, inp), w = upload_act(be, weight), dout_b = upload_act(be, dout);
    Buffer out = poisoned_act(be, inp.size()), dinp = upload_act(be, dinp0);
    Buffer mean = poisoned_f32(be, N), rstd = poisoned_f32(be, N);
    Buffer dweight(be, C * sizeof(float)), dbias(be, C * sizeof(float));
    Buffer dinp_sum(be, C * sizeof(float));
    Buffer zero_bias(be, C * be.act_bytes());
    be.layernorm_forward(out.get(), mean.f32(), rstd.f32(), inp_b.get(), w.get(), zero_bias.get(),
                         N, C);
    be.layernorm_backward(dinp.get(), dweight.f32(), dbias.f32(), dinp_sum.f32(), dout_b.get(),
                          inp_b.get(), w.get(), mean.f32(), rstd.f32(), N, C, GradMode::kAdd);
    return Outputs{{"dinp", download_act(be, dinp.get(), inp.size())},
                   {"dweight", download_f32(be, dweight.get(), C)},
                   {"dbias", download_f32(be, dbias.get(), C)},
                   {"dinp_sum", download_f32(be, dinp_sum.get(), C)}};
  };
  const Outputs fused = run();
  Outputs two_pass;
  with_env("ACCUM_LAYERNORM_GRADS", "two_pass", [&] { two_pass = run(); });
  for (const auto& [name, values] : fused) {
    EXPECT_TRUE(bit_identical(values, two_pass.at(name))) << name;
  }
}

// dinp_sum, the column sums of the dinp the LayerNorm backward stored, has the bits of the bias
// gradient matmul_backward's column_sum takes from that dinp: the model takes the projections'
// bias gradients from it, so training gives the same bits as with the separate pass. 64
// and 768 channels: the fused kernel; 1000: the two-pass path; 600 rows: 10 column-reduction
// chunks.
TEST(CudaOps, LayerNormDinpSumIsTheMatmulBiasGradient) {
  ACCUM_REQUIRE_CUDA();
  for (int C : {64, 768, 1000}) {
    SCOPED_TRACE(C);
    const int N = 600, in_channels = 16;
    const auto inp = random_bf16_values(size_t(N) * C, 18, 2.f, 0.3f);
    const auto weight = random_bf16_values(C, 19, 0.2f, 1.f);
    const auto dout = random_bf16_values(size_t(N) * C, 20);
    const auto dinp0 = random_bf16_values(size_t(N) * C, 21);
    const auto lin_inp = random_bf16_values(size_t(N) * in_channels, 22);
    const auto lin_weight = random_bf16_values(size_t(in_channels) * C, 23);
    Backends backends;
    Backend& be = *backends.gpu;
    Buffer inp_b = upload_act(be, inp), w = upload_act(be, weight), dout_b = upload_act(be, dout);
    Buffer lin_inp_b = upload_act(be, lin_inp), lin_w = upload_act(be, lin_weight);
    Buffer out = poisoned_act(be, inp.size()), dinp = upload_act(be, dinp0);
    Buffer mean = poisoned_f32(be, N), rstd = poisoned_f32(be, N),
           zero_bias(be, C * be.act_bytes());
    Buffer dweight = poisoned_f32(be, C), dbias = poisoned_f32(be, C);
    Buffer dinp_sum = poisoned_f32(be, C), lin_dbias = poisoned_f32(be, C);
    Buffer lin_dweight = poisoned_f32(be, size_t(in_channels) * C);
    be.layernorm_forward(out.get(), mean.f32(), rstd.f32(), inp_b.get(), w.get(), zero_bias.get(),
                         N, C);
    be.layernorm_backward(dinp.get(), dweight.f32(), dbias.f32(), dinp_sum.f32(), dout_b.get(),
                          inp_b.get(), w.get(), mean.f32(), rstd.f32(), N, C, GradMode::kWrite);
    be.matmul_backward(nullptr, lin_dweight.f32(), lin_dbias.f32(), dinp.get(), lin_inp_b.get(),
                       lin_w.get(), N, in_channels, C, WeightLayout::kInOut, GradMode::kWrite);
    const auto got = download_f32(be, dinp_sum.get(), C);
    EXPECT_TRUE(bit_identical(got, download_f32(be, lin_dbias.get(), C)));
    // And the plain sums of the stored dinp, on the host.
    const auto stored = download_act(be, dinp.get(), inp.size());
    for (int c = 0; c < C; ++c) {
      double sum = 0;
      for (int row = 0; row < N; ++row) sum += stored[size_t(row) * C + c];
      ASSERT_NEAR(got[c], sum, 1e-4 * (1 + std::fabs(sum))) << "column " << c;
    }
  }
}

// stride > 0: out and dout in rows `stride` apart (the logits' padded rows), the padding of
// dout NaN (a read of it spreads into every gradient) and that of out poisoned (a write of it
// fails here).
void matmul_case(int N, int C, int OC, WeightLayout layout, bool with_bias, int stride = 0) {
  const int ld = stride > 0 ? stride : OC;
  const auto inp = random_bf16_values(size_t(N) * C, 20);
  const auto weight = random_bf16_values(size_t(C) * OC, 21, 0.1f);
  const auto bias = random_bf16_values(OC, 22, 0.5f);
  const auto dout = padded_rows(random_bf16_values(size_t(N) * OC, 23), N, OC, ld, NAN);
  Gradients gradients{.params = {"dweight"}, .written = {"dinp"}};
  if (with_bias) gradients.params.insert("dbias");
  check_against_cpu(
      [&](Backend& be, const BackwardRuns& runs) {
        Buffer inp_b = upload_act(be, inp), w = upload_act(be, weight), b = upload_act(be, bias),
               dout_b = upload_act(be, dout);
        Buffer out = poisoned_act(be, size_t(N) * ld), dinp = poisoned_act(be, inp.size());
        Buffer dweight = runs.param_grads(be, weight.size()), dbias = runs.param_grads(be, OC);
        be.matmul_forward(out.get(), inp_b.get(), w.get(), with_bias ? b.get() : nullptr, N, C, OC,
                          layout, stride);
        for (int call = 0; call < runs.calls; ++call) {
          be.matmul_backward(dinp.get(), dweight.f32(), with_bias ? dbias.f32() : nullptr,
                             dout_b.get(), inp_b.get(), w.get(), N, C, OC, layout, runs.mode(call),
                             stride);
        }
        const auto out_rows = download_act(be, out.get(), size_t(N) * ld);
        EXPECT_EQ(finite_padding(out_rows, N, OC, ld), 0) << be.name() << " wrote out's padding";
        Outputs outputs{{"out", packed_rows(out_rows, N, OC, ld)},
                        {"dinp", download_act(be, dinp.get(), inp.size())},
                        {"dweight", download_f32(be, dweight.get(), weight.size())}};
        if (with_bias) outputs["dbias"] = download_f32(be, dbias.get(), OC);
        return outputs;
      },
      kBf16Tolerance, gradients);
}

TEST(CudaOps, MatmulInOutWithBias) {
  ACCUM_REQUIRE_CUDA();
  matmul_case(70, 96, 136, WeightLayout::kInOut, true);
}

// ACCUM_CUBLASLT_BGRAD=1: dbias from the weight-gradient GEMM's BGRADA epilogue (plus an
// add into the fp32 gradient) instead of the column reduction. Where cuBLASLt refuses the
// epilogue the column reduction runs; simt.SimtEmulator.BiasGradientEpilogueIsTaken checks
// that the emulated library is asked for it.
TEST(CudaOps, MatmulBiasGradientFromTheGemmEpilogue) {
  ACCUM_REQUIRE_CUDA();
  with_env("ACCUM_CUBLASLT_BGRAD", "1",
           [] { matmul_case(70, 96, 136, WeightLayout::kInOut, true); });
}

// ACCUM_CUBLASLT_REPORT=FILE (bench/gpu.sh's table of cuBLASLt's candidate algorithms):
// every new GEMM plan appends one row, with its shape and the candidates' times, and the
// products keep the bits of a back end without the switch. A second step makes no plan and
// so no row.
// with_env restores a switch also when its body throws: on an H100 a report test that failed
// inside it left ACCUM_CUBLASLT_REPORT set, and every later test failed with it
// (RESULTS 4.14). Needs no GPU.
TEST(GpuTestUtil, WithEnvRestoresTheVariableWhenTheBodyThrows) {
  const char* name = "ACCUM_TEST_WITH_ENV_SWITCH";
  for (const char* before : {"", "earlier"}) {
    if (*before) {
      setenv(name, before, 1);
    } else {
      unsetenv(name);
    }
    bool thrown = false;
    try {
      with_env(name, "during", [&] {
        EXPECT_EQ(std::string(std::getenv(name)), "during");
        throw std::runtime_error("the body failed");
      });
    } catch (const std::runtime_error&) {
      thrown = true;
    }
    EXPECT_TRUE(thrown);
    const char* after = std::getenv(name);
    EXPECT_EQ(std::string(after ? after : ""), std::string(before)) << "before: '" << before << "'";
  }
  unsetenv(name);
}

// One linear layer's forward and backward (N=70, C=96, OC=136, bias, kInOut) on fixed
// random inputs: the three GEMM shapes of a layer, for the cuBLASLt switches' tests.
struct LinearLayerStep {
  static constexpr int N = 70, C = 96, OC = 136;
  std::vector<float> inp = random_bf16_values(size_t(N) * C, 20);
  std::vector<float> weight = random_bf16_values(size_t(C) * OC, 21, 0.1f);
  std::vector<float> bias = random_bf16_values(OC, 22, 0.5f);
  std::vector<float> dout = random_bf16_values(size_t(N) * OC, 23);

  Outputs run(Backend& be, GradMode mode) const {
    Buffer inp_b = upload_act(be, inp), w = upload_act(be, weight), b = upload_act(be, bias),
           dout_b = upload_act(be, dout);
    Buffer out = poisoned_act(be, size_t(N) * OC), dinp = poisoned_act(be, inp.size());
    Buffer dweight(be, weight.size() * sizeof(float)), dbias(be, OC * sizeof(float));
    be.matmul_forward(out.get(), inp_b.get(), w.get(), b.get(), N, C, OC, WeightLayout::kInOut);
    be.matmul_backward(dinp.get(), dweight.f32(), dbias.f32(), dout_b.get(), inp_b.get(), w.get(),
                       N, C, OC, WeightLayout::kInOut, mode);
    return Outputs{{"out", download_act(be, out.get(), size_t(N) * OC)},
                   {"dinp", download_act(be, dinp.get(), inp.size())},
                   {"dweight", download_f32(be, dweight.get(), weight.size())},
                   {"dbias", download_f32(be, dbias.get(), OC)}};
  }
};

TEST(CudaOps, MatmulCandidateReportAddsARowPerShapeAndChangesNoBits) {
  ACCUM_REQUIRE_CUDA();
  char path[] = "/tmp/accum_cublaslt_report_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_TRUE(fd >= 0);
  close(fd);
  const LinearLayerStep layer;
  auto step = [&](Backend& be) { return layer.run(be, GradMode::kAdd); };
  Backends plain;
  const Outputs want = step(*plain.gpu);
  Outputs got, again;
  with_env("ACCUM_CUBLASLT_REPORT", path, [&] {
    Backends reporting;
    got = step(*reporting.gpu);
    again = step(*reporting.gpu);
  });
  for (const auto& [name, values] : want) {
    EXPECT_TRUE(bit_identical(got.at(name), values)) << "output " << name;
    EXPECT_TRUE(bit_identical(again.at(name), values)) << "output " << name << ", second step";
  }

  std::ifstream file(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(file, line);) lines.push_back(line);
  std::remove(path);
  ASSERT_EQ(lines.size(), size_t(5));  // the header, its rule, one row per GEMM of the step
  EXPECT_EQ(lines[0].rfind("| m x n x k | op(A) op(B) | D | beta | epilogue | alignment", 0),
            size_t(0));
  // Every buffer is a cudaMalloc of its own: 256-byte aligned.
  const std::vector<std::string> shapes = {"| 136 x 70 x 96 | NN | bf16 | 0 | BIAS | 256/256/256 |",
                                           "| 96 x 70 x 136 | TN | bf16 | 0 | - | 256/256/256 |",
                                           "| 136 x 96 x 70 | NT | fp32 | 1 | - | 256/256/256 |"};
  for (size_t row = 0; row < shapes.size(); ++row) {
    const std::string& line = lines[row + 2];
    EXPECT_EQ(line.rfind(shapes[row], 0), size_t(0)) << line;
    // Cells after the shape: the times, the first's, the best's, which, the ratio.
    std::vector<std::string> cells;
    std::stringstream rest(line.substr(shapes[row].size()));
    for (std::string cell; std::getline(rest, cell, '|');) cells.push_back(cell);
    ASSERT_LE(size_t(5), cells.size()) << line;
    EXPECT_GT(std::stod(cells[1]), 0.0) << "the first algorithm's time: " << line;
    EXPECT_LE(std::stod(cells[2]), std::stod(cells[1])) << "best <= first: " << line;
  }
}

// ACCUM_CUBLASLT_ALGOS=FILE: the first back end times the heuristic's candidates for each
// new GEMM shape and records the fastest in FILE; a second back end reads the choices, times
// nothing (FILE unchanged) and gets the first one's bits, as a rerun or resume must. A choice
// naming more candidates than cuBLASLt offers is refused: the file is really consulted. On the
// emulator the candidates share one arithmetic; on a GPU they may not, so the bits are
// compared between the two runs with the file, not with a run without it.
TEST(CudaOps, MatmulAlgorithmFileTimesOnceThenKeepsTheChoices) {
  ACCUM_REQUIRE_CUDA();
  char dir[] = "/tmp/accum_cublaslt_algos_XXXXXX";
  ASSERT_TRUE(mkdtemp(dir) != nullptr);
  const std::string path = std::string(dir) + "/algos.tsv";
  const LinearLayerStep layer;
  auto step = [&](Backend& be) { return layer.run(be, GradMode::kWrite); };
  auto read_lines = [&] {
    std::ifstream file(path);
    std::vector<std::string> lines;
    for (std::string line; std::getline(file, line);) lines.push_back(line);
    return lines;
  };
  Outputs first, second;
  std::vector<std::string> after_first, after_second;
  with_env("ACCUM_CUBLASLT_ALGOS", path.c_str(), [&] {
    {
      Backends timing;
      first = step(*timing.gpu);
    }
    after_first = read_lines();
    Backends keeping;
    second = step(*keeping.gpu);
    after_second = read_lines();
  });
  ASSERT_EQ(after_first.size(), size_t(5)) << "a comment, the machine, one line per GEMM shape";
  EXPECT_EQ(after_first[0].rfind("# ", 0), size_t(0)) << after_first[0];
  EXPECT_EQ(after_first[1].rfind("machine\t", 0), size_t(0)) << after_first[1];
  for (size_t row = 2; row < after_first.size(); ++row) {
    std::vector<std::string> fields;
    std::stringstream line(after_first[row]);
    for (std::string field; std::getline(line, field, '\t');) fields.push_back(field);
    ASSERT_EQ(fields.size(), size_t(4)) << after_first[row];
    EXPECT_LT(std::stoi(fields[1]), std::stoi(fields[2])) << after_first[row];
  }
  EXPECT_TRUE(after_second == after_first) << "the second back end timed again";
  for (const auto& [name, values] : first) {
    EXPECT_TRUE(bit_identical(second.at(name), values)) << "output " << name;
  }

  // Every choice now claims 99 candidates: cuBLASLt offers fewer, and says so.
  {
    std::ofstream file(path, std::ios::trunc);
    for (size_t row = 0; row < after_first.size(); ++row) {
      std::string line = after_first[row];
      if (row >= 2) {
        std::vector<std::string> fields;
        std::stringstream in(line);
        for (std::string field; std::getline(in, field, '\t');) fields.push_back(field);
        std::string times;
        for (int i = 0; i < 99; ++i) times += i ? " 1.0" : "1.0";
        line = fields[0] + "\t0\t99\t" + times;
      }
      file << line << "\n";
    }
  }
  std::string error;
  with_env("ACCUM_CUBLASLT_ALGOS", path.c_str(), [&] {
    try {
      Backends refusing;
      step(*refusing.gpu);
    } catch (const std::runtime_error& e) {
      error = e.what();
    }
  });
  EXPECT_NE(error.find("of 99 for GEMM"), std::string::npos) << error;
  EXPECT_NE(error.find("delete the file to time them again"), std::string::npos) << error;
  std::remove(path.c_str());
  rmdir(dir);
}

// The dense bf16 peaks MFU is reported against (host code, no GPU needed): the most
// specific name wins, unknown cards have none, ACCUM_PEAK_TFLOPS overrides and is checked.
TEST(CudaDevicePeak, KnownCardsUnknownCardsAndTheOverride) {
  EXPECT_EQ(cuda::dense_bf16_peak_tflops("NVIDIA H100 80GB HBM3"), 989.4);
  EXPECT_EQ(cuda::dense_bf16_peak_tflops("NVIDIA H100 PCIe"), 756.0);
  EXPECT_EQ(cuda::dense_bf16_peak_tflops("NVIDIA H200"), 989.4);
  EXPECT_EQ(cuda::dense_bf16_peak_tflops("NVIDIA A100-SXM4-80GB"), 312.0);
  EXPECT_EQ(cuda::dense_bf16_peak_tflops("SIMT emulator"), 0.0);
  with_env("ACCUM_PEAK_TFLOPS", "400",
           [] { EXPECT_EQ(cuda::peak_tflops_for("NVIDIA H100 80GB HBM3"), 400.0); });
  for (const char* bad : {"-1", "0", "fast", "12abc"}) {
    std::string error;
    with_env("ACCUM_PEAK_TFLOPS", bad, [&] {
      try {
        cuda::peak_tflops_for("NVIDIA H200");
      } catch (const std::runtime_error& e) {
        error = e.what();
      }
    });
    EXPECT_NE(error.find(std::string("ACCUM_PEAK_TFLOPS='") + bad + "'"), std::string::npos)
        << bad << ": " << error;
  }
}

// The spec keeps one file per machine in its folder: the GPU's name and cuBLASLt's version
// with every run of other characters as one '_', so two kinds of GPU never share a file.
TEST(CublasLtAlgoFile, NamesAFileForEachMachine) {
  EXPECT_EQ(cuda::algo_file_name("NVIDIA H200 | cuBLASLt 130100"),
            "cublaslt_algos_NVIDIA_H200_cuBLASLt_130100.tsv");
  EXPECT_EQ(cuda::algo_file_name("NVIDIA H100 80GB HBM3 | cuBLASLt 130100"),
            "cublaslt_algos_NVIDIA_H100_80GB_HBM3_cuBLASLt_130100.tsv");
  EXPECT_NE(cuda::algo_file_name("NVIDIA H100 80GB HBM3 | cuBLASLt 130100"),
            cuda::algo_file_name("NVIDIA H100 80GB HBM3 | cuBLASLt 130200"));
  EXPECT_EQ(cuda::algo_file_name("/../x"), "cublaslt_algos_x.tsv");  // never leaves the folder
}

// The file's edges, host code only (no GPU needed): a choice round-trips through the file,
// processes sharing the file agree on one choice per shape, a file timed on another machine, a
// malformed line and a shape chosen twice are refused with the file, the line and what was
// expected, and a last line cut short by a crash is dropped (that shape is timed again) while the
// choices before it are kept.
TEST(CublasLtAlgoFile, KeepsChoicesAndRefusesWhatItCannotTrust) {
  char dir[] = "/tmp/accum_algo_file_XXXXXX";
  ASSERT_TRUE(mkdtemp(dir) != nullptr);
  const std::string path = std::string(dir) + "/algos.tsv";
  auto write = [&](const std::string& text) { std::ofstream(path, std::ios::trunc) << text; };
  auto refusal = [&](const std::string& machine) {
    try {
      cuda::AlgoTable table(path, machine);
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  {
    cuda::AlgoTable table(path, "GPU A | cuBLASLt 1");  // no file yet: empty
    EXPECT_EQ(table.find("64x64x64 NN"), nullptr);
    EXPECT_EQ(table.record("64x64x64 NN", {2, 3}, {5.0f, 4.0f, 3.0f}).index, 2);
    table.record("32x32x32 TN", {0, 2}, {1.0f, -1.0f});
  }
  {
    cuda::AlgoTable table(path, "GPU A | cuBLASLt 1");
    ASSERT_NE(table.find("64x64x64 NN"), nullptr);
    EXPECT_EQ(table.find("64x64x64 NN")->index, 2);
    EXPECT_EQ(table.find("64x64x64 NN")->candidates, 3);
    ASSERT_NE(table.find("32x32x32 TN"), nullptr);
    EXPECT_EQ(table.find("32x32x32 TN")->index, 0);
  }
  {
    // Two processes (two tables) timing the same new shape: the second to record takes the
    // first's choice, so every rank of a job runs the same algorithm.
    cuda::AlgoTable rank0(path, "GPU A | cuBLASLt 1"), rank1(path, "GPU A | cuBLASLt 1");
    EXPECT_EQ(rank1.record("16x16x16 NN", {1, 3}, {3.0f, 1.0f, 2.0f}).index, 1);
    EXPECT_EQ(rank0.record("16x16x16 NN", {2, 3}, {3.0f, 2.0f, 1.0f}).index, 1);
    ASSERT_NE(rank0.find("16x16x16 NN"), nullptr);
    EXPECT_EQ(rank0.find("16x16x16 NN")->index, 1);
    cuda::AlgoTable reread(path, "GPU A | cuBLASLt 1");  // one line for the shape, not two
    ASSERT_NE(reread.find("16x16x16 NN"), nullptr);
    EXPECT_EQ(reread.find("16x16x16 NN")->index, 1);
  }
  EXPECT_NE(refusal("GPU B | cuBLASLt 1")
                .find("timed on 'GPU A | cuBLASLt 1', this is 'GPU B | cuBLASLt 1'"),
            std::string::npos);
  // A file the spec keeps is named in messages after the spec field, not the variable.
  std::string labelled = "(accepted)";
  try {
    cuda::AlgoTable table(path, "GPU B | cuBLASLt 1", "cuda.keep_cublaslt_algorithms");
  } catch (const std::runtime_error& e) {
    labelled = e.what();
  }
  EXPECT_EQ(labelled.rfind("cuda.keep_cublaslt_algorithms file '" + path + "': ", 0), 0u)
      << labelled;

  write("machine\tM\nshape one\t3\t3\t1 2 3\n");
  EXPECT_NE(refusal("M").find("line 2: expected 'SHAPE<TAB>INDEX<TAB>CANDIDATES<TAB>TIMES'"),
            std::string::npos)
      << refusal("M");
  write("machine\tM\nshape one\t0\t2\t1 2 3\n");  // three times for two candidates
  EXPECT_NE(refusal("M").find("line 2: expected"), std::string::npos) << refusal("M");
  write("shape one\t0\t1\t1\nmachine\tM\n");
  EXPECT_NE(refusal("M").find("line 1: a choice before the 'machine' line"), std::string::npos)
      << refusal("M");
  write("machine\tM\nshape one\t0\t1\t1\n# note\nshape one\t0\t1\t2\n");
  EXPECT_NE(refusal("M").find("line 4: shape 'shape one' chosen again (first on line 2)"),
            std::string::npos)
      << refusal("M");

  write("machine\tM\nshape one\t1\t2\t3.0 2.0\nshape two\t0\t2\t1.");  // torn append
  {
    cuda::AlgoTable table(path, "M");
    ASSERT_NE(table.find("shape one"), nullptr);
    EXPECT_EQ(table.find("shape one")->index, 1);
    EXPECT_EQ(table.find("shape two"), nullptr) << "a torn line was taken for a choice";
    table.record("shape two", {1, 2}, {2.0f, 1.0f});
  }
  std::ifstream file(path);
  std::stringstream content;
  content << file.rdbuf();
  EXPECT_EQ(content.str(), "machine\tM\nshape one\t1\t2\t3.0 2.0\nshape two\t1\t2\t2.0 1.0\n");
  std::remove(path.c_str());
  rmdir(dir);
}

TEST(CudaOps, MatmulOutInWithoutBias) {
  ACCUM_REQUIRE_CUDA();
  matmul_case(70, 96, 200, WeightLayout::kOutIn, false);  // the tied LM head's layout
}

// The tied LM head's weight gradient over an odd vocabulary in rows padded to 64
// (Backend::row_stride): the 16-byte-aligned leading dimensions GPT-2's 50257 gets, and its
// dW in two products (the first 192 rows, then 9), or in one with ACCUM_CUBLASLT_SPLIT=0.
TEST(CudaOps, MatmulOutInOddColumnsInPaddedRows) {
  ACCUM_REQUIRE_CUDA();
  matmul_case(70, 96, 201, WeightLayout::kOutIn, false, 256);
  with_env("ACCUM_CUBLASLT_SPLIT", "0",
           [] { matmul_case(70, 96, 201, WeightLayout::kOutIn, false, 256); });
}

// A bias and its gradient over padded rows: the column reduction's 16-byte path (stride and
// OC multiples of 8), then its scalar path (an odd stride).
TEST(CudaOps, MatmulBiasGradientOverPaddedRows) {
  ACCUM_REQUIRE_CUDA();
  matmul_case(70, 32, 136, WeightLayout::kInOut, true, 200);
  matmul_case(70, 32, 136, WeightLayout::kInOut, true, 139);
}

// 600 rows for the bias gradient's column reduction (as LayerNormManyRows), 264 columns:
// a second, ragged tile of its 16-byte path.
TEST(CudaOps, MatmulBiasGradientManyRows) {
  ACCUM_REQUIRE_CUDA();
  matmul_case(600, 32, 264, WeightLayout::kInOut, true);
}

// The bias gradient's column reduction over 34 chunks (as LayerNormMoreChunksThanFinalizeLanes).
TEST(CudaOps, MatmulBiasGradientMoreChunksThanFinalizeLanes) {
  ACCUM_REQUIRE_CUDA();
  matmul_case(2113, 16, 40, WeightLayout::kInOut, true);
}

// More rows than 65535 chunks of 64 (CUDA's gridDim.y limit, where the column reduction's
// chunks go): B*T = 4.2M, e.g. B = 2048 at T = 2048 on a small model. Every dout is 1, so
// every bias gradient is exactly the row count (fp32 holds it exactly), tail chunk included.
// (Not a CudaOps test: the emulator's schedules, which CudaOps.* runs under, are about
// barriers, and 65538 blocks take it seconds each time.)
TEST(CudaGridLimits, MatmulBiasGradientOverMoreChunksThanGridY) {
  ACCUM_REQUIRE_CUDA();
  auto be = make_backend(DeviceKind::kCuda);
  const int N = 65536 * 64 + 100, C = 8, OC = 8;
  Buffer dout = upload_act(*be, std::vector<float>(size_t(N) * OC, 1.f));
  Buffer inp(*be, size_t(N) * C * be->act_bytes()), w(*be, size_t(C) * OC * be->act_bytes());
  Buffer dbias = poisoned_f32(*be, OC);
  be->matmul_backward(nullptr, nullptr, dbias.f32(), dout.get(), inp.get(), w.get(), N, C, OC,
                      WeightLayout::kInOut, GradMode::kWrite);
  for (const float sum : download_f32(*be, dbias.get(), OC)) EXPECT_EQ(sum, float(N));
}

TEST(CudaOps, MatmulOutInWithBias) {
  ACCUM_REQUIRE_CUDA();
  matmul_case(33, 64, 48, WeightLayout::kOutIn, true);
}

// residual_out = a + b, then LayerNorm of it, in one kernel.
void residual_layernorm_case(int N, int C) {
  const auto a = random_bf16_values(size_t(N) * C, 14, 2.f, 0.3f);
  const auto b = random_bf16_values(size_t(N) * C, 15);
  const auto weight = random_bf16_values(C, 16, 0.2f, 1.f);
  const auto bias = random_bf16_values(C, 17, 0.2f);
  check_against_cpu(
      [&](Backend& be, const BackwardRuns&) {
        Buffer a_b = upload_act(be, a), b_b = upload_act(be, b), w = upload_act(be, weight),
               bias_b = upload_act(be, bias);
        Buffer residual = poisoned_act(be, a.size()), out = poisoned_act(be, a.size());
        Buffer mean = poisoned_f32(be, N), rstd = poisoned_f32(be, N);
        be.residual_layernorm_forward(residual.get(), out.get(), mean.f32(), rstd.f32(), a_b.get(),
                                      b_b.get(), w.get(), bias_b.get(), N, C);
        return Outputs{{"residual", download_act(be, residual.get(), a.size())},
                       {"out", download_act(be, out.get(), a.size())},
                       {"mean", download_f32(be, mean.get(), N)},
                       {"rstd", download_f32(be, rstd.get(), N)}};
      },
      kBf16Tolerance);
}

TEST(CudaOps, ResidualLayerNormVectorized) {
  ACCUM_REQUIRE_CUDA();
  residual_layernorm_case(131, 96);
}

TEST(CudaOps, ResidualLayerNormScalarChannels) {
  ACCUM_REQUIRE_CUDA();
  residual_layernorm_case(67, 50);
}

// The MLP's first linear layer with its GELU (forward) and the second one's backward through
// that GELU. OC (forward) and C (backward) a multiple of 8 take cuBLASLt's GELU_AUX / DGELU
// epilogues; otherwise the unfused fallback runs. dpre is poisoned: it must be written.
void matmul_gelu_case(int N, int C, int OC, bool with_bias) {
  const auto inp = random_bf16_values(size_t(N) * C, 24);
  const auto weight = random_bf16_values(size_t(C) * OC, 25, 0.2f);
  const auto bias = random_bf16_values(OC, 26, 0.5f);
  const auto weight2 = random_bf16_values(size_t(OC) * C, 27, 0.2f);  // (OC -> C) layer
  const auto dout = random_bf16_values(size_t(N) * C, 28);
  Gradients gradients{.params = {"dweight2"}, .written = {"dpre"}};
  if (with_bias) gradients.params.insert("dbias2");
  check_against_cpu(
      [&](Backend& be, const BackwardRuns& runs) {
        Buffer inp_b = upload_act(be, inp), w = upload_act(be, weight), b = upload_act(be, bias),
               w2 = upload_act(be, weight2), dout_b = upload_act(be, dout);
        Buffer out = poisoned_act(be, size_t(N) * OC), pre = poisoned_act(be, size_t(N) * OC);
        Buffer dpre = poisoned_act(be, size_t(N) * OC);
        Buffer dweight2 = runs.param_grads(be, weight2.size()), dbias2 = runs.param_grads(be, C);
        be.matmul_gelu_forward(out.get(), pre.get(), inp_b.get(), w.get(),
                               with_bias ? b.get() : nullptr, N, C, OC, WeightLayout::kInOut);
        for (int call = 0; call < runs.calls; ++call) {
          be.matmul_gelu_backward(dpre.get(), dweight2.f32(), with_bias ? dbias2.f32() : nullptr,
                                  dout_b.get(), out.get(), pre.get(), w2.get(), N, OC, C,
                                  WeightLayout::kInOut, runs.mode(call));
        }
        Outputs outputs{{"out", download_act(be, out.get(), size_t(N) * OC)},
                        {"pre", download_act(be, pre.get(), size_t(N) * OC)},
                        {"dpre", download_act(be, dpre.get(), size_t(N) * OC)},
                        {"dweight2", download_f32(be, dweight2.get(), weight2.size())}};
        if (with_bias) outputs["dbias2"] = download_f32(be, dbias2.get(), C);
        return outputs;
      },
      kBf16Tolerance, gradients);
}

TEST(CudaOps, MatmulGeluEpilogues) {
  ACCUM_REQUIRE_CUDA();
  matmul_gelu_case(70, 96, 384, true);  // the MLP shape: OC = 4C
}

TEST(CudaOps, MatmulGeluWithoutBias) {
  ACCUM_REQUIRE_CUDA();
  matmul_gelu_case(33, 64, 256, false);
}

TEST(CudaOps, MatmulGeluUnfusedFallback) {
  ACCUM_REQUIRE_CUDA();
  matmul_gelu_case(29, 40, 100, true);  // 100 is not a multiple of 8: no epilogue
}

TEST(CudaOps, Gelu) {
  ACCUM_REQUIRE_CUDA();
  const size_t n = 1003;  // not a multiple of 8: the scalar tail runs too
  const auto inp = random_bf16_values(n, 30, 2.f);
  const auto dout = random_bf16_values(n, 31);
  check_against_cpu(
      [&](Backend& be, const BackwardRuns& runs) {
        Buffer inp_b = upload_act(be, inp), dout_b = upload_act(be, dout);
        Buffer out = poisoned_act(be, n), dinp = poisoned_act(be, n);
        be.gelu_forward(out.get(), inp_b.get(), n);
        for (int call = 0; call < runs.calls; ++call) {
          be.gelu_backward(dinp.get(), inp_b.get(), dout_b.get(), n);
        }
        return Outputs{{"out", download_act(be, out.get(), n)},
                       {"dinp", download_act(be, dinp.get(), n)}};
      },
      kBf16Tolerance, {.written = {"dinp"}});
}

TEST(CudaOps, Residual) {
  ACCUM_REQUIRE_CUDA();
  const size_t n = 1003;
  const auto a = random_bf16_values(n, 40), b = random_bf16_values(n, 41);
  check_against_cpu(
      [&](Backend& be, const BackwardRuns&) {
        Buffer a_b = upload_act(be, a), b_b = upload_act(be, b), out = poisoned_act(be, n);
        be.residual_forward(out.get(), a_b.get(), b_b.get(), n);
        return Outputs{{"out", download_act(be, out.get(), n)}};
      },
      kBf16Tolerance);
}

TEST(CudaOps, ConversionsRoundToNearestEven) {
  ACCUM_REQUIRE_CUDA();
  Backends backends;
  Backend& gpu = *backends.gpu;
  ASSERT_EQ(gpu.act_bytes(), 2u);
  const size_t n = 1001;
  std::vector<float> values(n);
  std::mt19937_64 rng(50);
  std::normal_distribution<float> dist(0.f, 3.f);
  for (auto& value : values) value = dist(rng);  // NOT pre-rounded
  Buffer src = upload_f32(gpu, values);
  Buffer working = poisoned_act(gpu, n);
  gpu.copy_master_to_working(working.get(), src.f32(), n);
  const auto back = download_act(gpu, working.get(), n);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(back[i], round_bf16(values[i])) << "element " << i << " of " << values[i];
  }
  Buffer copy = poisoned_f32(gpu, n);
  gpu.copy_f32(copy.f32(), src.f32(), n);
  EXPECT_TRUE(bit_identical(download_f32(gpu, copy.get(), n), values));
}

}  // namespace
}  // namespace accum::kernels::gpu_testing
