// tests/gpu/cuda_attention_loss_test.cpp — fused causal attention (tensor-core and CUDA-core
// kernels), the fused classifier, AdamW and the gradient norm on CUDA against the CPU oracle
// (see op_harness.h).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "tests/gpu/op_harness.h"

namespace accum::kernels::gpu_testing {
namespace {

// The forward and backward of one attention call, as a harness scenario.
Scenario attention_scenario(int B, int T, int C, int NH) {
  const size_t qkv_n = size_t(B) * T * 3 * C, out_n = size_t(B) * T * C;
  const auto qkv = random_bf16_values(qkv_n, 60);
  const auto dout = random_bf16_values(out_n, 61);
  return
      [=](Backend& be, const BackwardRuns& runs) {
        Buffer qkv_b = upload_act(be, qkv), dout_b = upload_act(be, dout);
        Buffer out = poisoned_act(be, out_n);
        Buffer saved(be, be.attention_saved_bytes(B, T, NH));
        // CUDA's saved log-sum-exp must be written by the forward; the CPU's saved
        // probabilities are its own business (it may leave the masked half unwritten).
        if (be.kind() == DeviceKind::kCuda) poison(be, saved);
        Buffer dqkv = poisoned_act(be, qkv_n);
        be.attention_forward(out.get(), saved.get(), qkv_b.get(), B, T, C, NH);
        for (int call = 0; call < runs.calls; ++call) {
          be.attention_backward(dqkv.get(), dout_b.get(), qkv_b.get(), out.get(), saved.get(), B, T,
                                C, NH);
        }
        return Outputs{{"out", download_act(be, out.get(), out_n)},
                       {"dqkv", download_act(be, dqkv.get(), qkv_n)}};
      };
}

// Every output of `got` has the bits of the same output of `want`; a failure names it after
// `what`.
void expect_bit_identical(const Outputs& got, const Outputs& want, const char* what) {
  for (const auto& [name, values] : want) {
    EXPECT_TRUE(bit_identical(got.at(name), values)) << what << name;
  }
}

// Every CUDA implementation against the CPU: the tensor-core kernels (attention_mma.cu, head
// sizes 16..128), their candidates (ACCUM_ATTENTION=mma_dkdv32: dK/dV with 32-query steps;
// mma_fwd128: a forward of 128-query blocks; both for head sizes up to 64) and the CUDA-core
// ones (ACCUM_ATTENTION=simple, every head size).
void attention_case(int B, int T, int C, int NH) {
  for (const char* choice : {"", "mma_dkdv32", "mma_fwd128", "simple"}) {
    SCOPED_TRACE(*choice ? std::string("ACCUM_ATTENTION=") + choice : "default kernels");
    with_env("ACCUM_ATTENTION", choice, [&] {
      check_against_cpu(attention_scenario(B, T, C, NH), kBf16Tolerance, {.written = {"dqkv"}});
    });
  }
}

TEST(CudaOps, AttentionHeadSize8UsesCudaCores) {
  ACCUM_REQUIRE_CUDA();
  attention_case(2, 70, 32, 4);
}

TEST(CudaOps, AttentionHeadSize64Gpt2Shape) {
  ACCUM_REQUIRE_CUDA();
  attention_case(1, 1024, 256, 4);  // GPT-2's head size and context: 16 query tiles
}

TEST(CudaOps, AttentionHeadSize64) {
  ACCUM_REQUIRE_CUDA();
  attention_case(2, 100, 128, 2);  // T = 100: one full and one ragged 64-row tile
}

TEST(CudaOps, AttentionHeadSize32ManyTiles) {
  ACCUM_REQUIRE_CUDA();
  attention_case(1, 200, 128, 4);
}

TEST(CudaOps, AttentionHeadSize16Short) {
  ACCUM_REQUIRE_CUDA();
  attention_case(3, 7, 32, 2);
}

TEST(CudaOps, AttentionHeadSize128) {
  ACCUM_REQUIRE_CUDA();
  attention_case(1, 70, 256, 2);
}

// More (batch, head) pairs than CUDA's gridDim.y limit (65535) on the CUDA-core kernels
// (head size 8 always takes them): B = 8200 x 8 heads. With T = 1 each query sees only its
// own key, so out = v, and the backward gives dq = dk = 0 and dv = dout, exactly.
TEST(CudaGridLimits, AttentionOverMoreHeadsThanGridY) {
  ACCUM_REQUIRE_CUDA();
  auto be = make_backend(DeviceKind::kCuda);
  const int B = 8200, T = 1, C = 64, NH = 8;
  const size_t rows = size_t(B) * T;
  const auto qkv_values = random_bf16_values(rows * 3 * C, 31);
  const auto dout_values = random_bf16_values(rows * C, 32);
  Buffer qkv = upload_act(*be, qkv_values), dout = upload_act(*be, dout_values);
  Buffer out = poisoned_act(*be, rows * C), dqkv = poisoned_act(*be, rows * 3 * C);
  Buffer saved(*be, be->attention_saved_bytes(B, T, NH));
  be->attention_forward(out.get(), saved.get(), qkv.get(), B, T, C, NH);
  be->attention_backward(dqkv.get(), dout.get(), qkv.get(), out.get(), saved.get(), B, T, C, NH);
  const auto got = download_act(*be, out.get(), rows * C);
  const auto grads = download_act(*be, dqkv.get(), rows * 3 * C);
  for (size_t r = 0; r < rows; ++r) {
    for (int c = 0; c < C; ++c) {
      ASSERT_EQ(got[r * C + c], qkv_values[r * 3 * C + 2 * C + c]) << "out, row " << r;
      ASSERT_EQ(grads[r * 3 * C + c], 0.f) << "dq, row " << r;
      ASSERT_EQ(grads[r * 3 * C + C + c], 0.f) << "dk, row " << r;
      ASSERT_EQ(grads[r * 3 * C + 2 * C + c], dout_values[r * C + c]) << "dv, row " << r;
    }
  }
}

// ACCUM_ATTENTION_HEAD_GROUP changes only the order the blocks start in: every order gives
// the default's bits. 6 heads x 4 tiles: groups of 1 (head by head), 4 (a last group of 2
// heads) and 100 (capped at the 6 heads) against the default (all heads at once).
TEST(CudaOps, AttentionBlockOrderChangesNoBits) {
  ACCUM_REQUIRE_CUDA();
  const Scenario scenario = attention_scenario(3, 200, 128, 2);
  Backends backends;
  const Outputs want = scenario(*backends.gpu, {});
  for (const char* group : {"1", "4", "100"}) {
    SCOPED_TRACE(std::string("ACCUM_ATTENTION_HEAD_GROUP=") + group);
    with_env("ACCUM_ATTENTION_HEAD_GROUP", group, [&] {
      const Outputs got = scenario(*backends.gpu, {});
      expect_bit_identical(got, want, "output ");
    });
  }
}

// The candidate forward of 128-query blocks (ACCUM_ATTENTION=mma_fwd128) computes every row
// as the default's 64-query blocks do: the same bits, including T = 200 (a 128-query block
// past T) and T = 100 (the first 64 rows of the only block skip their second key tile).
TEST(CudaOps, AttentionWideForwardBlocksGiveTheDefaultBits) {
  ACCUM_REQUIRE_CUDA();
  for (const int T : {200, 100}) {
    for (const int C : {128, 64}) {  // head sizes 64 and 32
      SCOPED_TRACE("T=" + std::to_string(T) + " C=" + std::to_string(C));
      const Scenario scenario = attention_scenario(2, T, C, 2);
      Backends backends;
      const Outputs want = scenario(*backends.gpu, {});
      with_env("ACCUM_ATTENTION", "mma_fwd128", [&] {
        const Outputs got = scenario(*backends.gpu, {});
        expect_bit_identical(got, want, "output ");
      });
    }
  }
}

// ACCUM_ATTENTION takes only the values attention.cu knows; anything else (a retired
// candidate such as wgmma or mma_saved_ds, a misspelling) is refused with the accepted
// values, rather than running the default kernels under the candidate's name.
TEST(CudaOps, AttentionChoiceThatIsNotKnownIsRefused) {
  ACCUM_REQUIRE_CUDA();
  const Scenario scenario = attention_scenario(1, 64, 128, 2);
  Backends backends;
  for (const char* choice : {"wgmma", "mma_saved_ds", "SIMPLE", "mma_fwd"}) {
    std::string error = "(accepted)";
    with_env("ACCUM_ATTENTION", choice, [&] {
      try {
        scenario(*backends.gpu, {});
      } catch (const std::exception& e) {
        error = e.what();
      }
    });
    const std::string expected =
        std::string("ACCUM_ATTENTION='") + choice + "': expected simple, mma_dkdv32 or mma_fwd128";
    EXPECT_TRUE(error.find(expected) != std::string::npos) << "error: " << error;
  }
}

TEST(CudaOps, AttentionHeadGroupThatIsNotACountIsRefused) {
  ACCUM_REQUIRE_CUDA();
  const Scenario scenario = attention_scenario(1, 64, 128, 2);
  Backends backends;
  for (const char* group : {"0", "-2", "four", "3x"}) {
    std::string error = "(accepted)";
    with_env("ACCUM_ATTENTION_HEAD_GROUP", group, [&] {
      try {
        scenario(*backends.gpu, {});
      } catch (const std::exception& e) {
        error = e.what();
      }
    });
    const std::string expected = std::string("ACCUM_ATTENTION_HEAD_GROUP='") + group +
                                 "' is not a head count (expected an integer >= 1";
    EXPECT_TRUE(error.find(expected) != std::string::npos) << "error: " << error;
  }
}

// alias_logits: dlogits written over the logits buffer, as the model does. stride > 0: rows
// `stride` apart (the model's padded logits) with NaN in the padding, which must count for
// nothing (a NaN read spreads into the row's loss) and be written 0 in dlogits.
void crossentropy_case(int N, int V, bool with_mask, bool with_dlogits, bool alias_logits,
                       int stride = 0) {
  const int ld = stride > 0 ? stride : V;
  const auto logits = padded_rows(random_bf16_values(size_t(N) * V, 70, 2.f), N, V, ld, NAN);
  const auto targets = random_ints(N, V, 71);
  std::vector<uint8_t> mask(N, 1);
  for (int i = 0; i < N; i += 3) mask[i] = 0;
  const float dloss = 1.f / 7.f;
  check_against_cpu(
      [&](Backend& be, const BackwardRuns&) {
        Buffer logits_b = upload_act(be, logits), targets_b = upload_ints(be, targets);
        Buffer mask_b(be, N);
        be.upload(mask_b.get(), mask.data(), N);
        Buffer losses = poisoned_f32(be, N);
        Buffer dlogits = poisoned_act(be, logits.size());
        void* dlogits_ptr =
            with_dlogits ? (alias_logits ? logits_b.get() : dlogits.get()) : nullptr;
        be.crossentropy_forward_backward(
            losses.f32(), dlogits_ptr, logits_b.get(), static_cast<const int32_t*>(targets_b.get()),
            with_mask ? static_cast<const uint8_t*>(mask_b.get()) : nullptr, dloss, N, V, stride);
        Outputs outputs{{"losses", download_f32(be, losses.get(), N)}};
        if (with_dlogits) {
          const auto rows = download_act(be, dlogits_ptr, logits.size());
          outputs["dlogits"] = packed_rows(rows, N, V, ld);
          // The padding columns, written 0 (the model's LM head multiplies them by weights).
          std::vector<float> padding;
          for (int r = 0; r < N; ++r) {
            padding.insert(padding.end(), rows.begin() + size_t(r) * ld + V,
                           rows.begin() + size_t(r + 1) * ld);
          }
          if (!padding.empty()) outputs["dlogits padding"] = padding;
        }
        return outputs;
      },
      kBf16Tolerance);
}

TEST(CudaOps, CrossEntropyMaskedOddVocab) {
  ACCUM_REQUIRE_CUDA();
  crossentropy_case(9, 1001, true, true, false);
}

TEST(CudaOps, CrossEntropyInPlaceOverLogits) {
  ACCUM_REQUIRE_CUDA();
  crossentropy_case(5, 2048, true, true, true);
}

// V % 8 == 0: the 16-byte path; 4104 leaves a last chunk to thread 0 alone.
TEST(CudaOps, CrossEntropyVectorizedPaddedVocab) {
  ACCUM_REQUIRE_CUDA();
  crossentropy_case(7, 4104, false, true, false);
}

// Without dlogits the 16-byte path does not cache the row.
TEST(CudaOps, CrossEntropyLossOnlyPaddedVocab) {
  ACCUM_REQUIRE_CUDA();
  crossentropy_case(5, 1024, true, false, false);
}

TEST(CudaOps, CrossEntropyLossOnlyUnmasked) {
  ACCUM_REQUIRE_CUDA();
  crossentropy_case(6, 513, false, false, false);
}

// An odd vocabulary in rows padded to a multiple of 8 (Backend::row_stride pads to 64): the
// 16-byte path with a last chunk that is mostly padding (1001 = 125 * 8 + 1), written over the
// logits, separately, and for the loss alone.
TEST(CudaOps, CrossEntropyOddVocabInPaddedRows) {
  ACCUM_REQUIRE_CUDA();
  crossentropy_case(7, 1001, true, true, true, 1024);
  crossentropy_case(7, 1001, false, true, false, 1024);
  crossentropy_case(5, 1001, true, false, false, 1024);
}

// GPT-2's own vocabulary in the rows the model gives it (50257 in rows of 50304): the row
// cached in shared memory, its last chunk one logit and seven of padding.
TEST(CudaOps, CrossEntropyGpt2VocabInPaddedRows) {
  ACCUM_REQUIRE_CUDA();
  crossentropy_case(2, 50257, false, true, true, 50304);
}

AdamWParams adamw_test_params() {
  AdamWParams params;
  params.lr = 1e-3f;
  params.weight_decay = 0.1f;
  params.grad_scale = 0.5f;
  return params;
}

void adamw_case(size_t n, double beta2 = 0.95) {
  const auto master0 = random_bf16_values(n, 80, 0.1f);
  const auto grads = random_bf16_values(n, 81, 0.01f);
  check_against_cpu(
      [&](Backend& be, const BackwardRuns&) {
        Buffer master = upload_f32(be, master0), g = upload_f32(be, grads);
        Buffer m(be, n * sizeof(float)), v(be, n * sizeof(float));
        Buffer working = poisoned_act(be, n);
        void* working_ptr = be.has_working_copy() ? working.get() : nullptr;
        AdamWParams params = adamw_test_params();
        params.beta2 = beta2;
        for (int step = 1; step <= 2; ++step) {
          params.step = step;
          be.adamw_update(master.f32(), working_ptr, g.f32(), m.f32(), v.f32(), n, params);
        }
        Outputs outputs{{"master", download_f32(be, master.get(), n)},
                        {"m", download_f32(be, m.get(), n)},
                        {"v", download_f32(be, v.get(), n)}};
        std::vector<float> delta = outputs["master"];
        for (size_t i = 0; i < n; ++i) delta[i] -= master0[i];
        outputs["master_delta"] = delta;
        outputs["working"] = working_ptr ? download_act(be, working_ptr, n) : outputs["master"];
        return outputs;
      },
      kF32Tolerance, {}, {{"working", kBf16Tolerance}});
}

TEST(CudaOps, AdamWTwoSteps) {
  ACCUM_REQUIRE_CUDA();
  adamw_case(1001);  // odd: one element at a time
}

TEST(CudaOps, AdamWTwoStepsVectorized) {
  ACCUM_REQUIRE_CUDA();
  adamw_case(4100);  // n % 4 == 0: four elements per access
}

// 1 - beta2 taken in double, as the CPU twin takes it: in fp32, 1 - 0.99999f is 1.4e-3 off,
// and the second moment with it, far past the fp32 tolerance.
TEST(CudaOps, AdamWKeepsBetasNearOneExact) {
  ACCUM_REQUIRE_CUDA();
  adamw_case(4100, 0.99999);
}

// The optimizer's update of every tensor in one call (Backend::adamw_update_segments, one
// launch on CUDA): a piece that spans several blocks, odd and misaligned pieces (element by
// element), moments stored compactly, and a gap of values no piece covers (under ZeRO-1
// another rank owns them), which must stay as they were.
constexpr size_t kPiecesN = 20000, kGapBegin = 10037, kGapEnd = 12000, kMomentsN = 18040;

Outputs adamw_pieces_run(Backend& be, bool one_call, const std::vector<float>& master0,
                         const std::vector<float>& grads) {
  const std::vector<Backend::AdamWSegment> pieces = {
      {0, 9000, 0, true},            // 16-byte aligned, 3 blocks of 4096
      {9000, 37, 9000, false},       // odd count
      {9037, 1000, 9037, true},      // misaligned offset
      {12000, 4100, 10037, true},    // after the gap; misaligned moments
      {16100, 3900, 14140, false}};  // aligned again: vectors
  Buffer master = upload_f32(be, master0), g = upload_f32(be, grads);
  Buffer m(be, kMomentsN * sizeof(float)), v(be, kMomentsN * sizeof(float));
  be.upload(m.get(), std::vector<float>(kMomentsN, 0.f).data(), kMomentsN * sizeof(float));
  be.upload(v.get(), std::vector<float>(kMomentsN, 0.f).data(), kMomentsN * sizeof(float));
  Buffer working = poisoned_act(be, kPiecesN);
  void* working_ptr = be.has_working_copy() ? working.get() : nullptr;
  AdamWParams params = adamw_test_params();
  for (int step = 1; step <= 2; ++step) {
    params.step = step;
    if (one_call) {
      be.adamw_update_segments(master.f32(), working_ptr, g.f32(), m.f32(), v.f32(), pieces,
                               params);
    } else {
      be.Backend::adamw_update_segments(master.f32(), working_ptr, g.f32(), m.f32(), v.f32(),
                                        pieces, params);  // one adamw_update per piece
    }
  }
  Outputs outputs{{"master", download_f32(be, master.get(), kPiecesN)},
                  {"m", download_f32(be, m.get(), kMomentsN)},
                  {"v", download_f32(be, v.get(), kMomentsN)}};
  // The gap's working copy is never written (it stays poisoned): compare the pieces only.
  std::vector<float> w = working_ptr ? download_act(be, working_ptr, kPiecesN) : outputs["master"];
  w.erase(w.begin() + kGapBegin, w.begin() + kGapEnd);
  outputs["working"] = w;
  return outputs;
}

TEST(CudaOps, AdamWEveryTensorInOneLaunch) {
  ACCUM_REQUIRE_CUDA();
  const auto master0 = random_bf16_values(kPiecesN, 82, 0.1f);
  const auto grads = random_bf16_values(kPiecesN, 83, 0.01f);
  check_against_cpu(
      [&](Backend& be, const BackwardRuns&) { return adamw_pieces_run(be, true, master0, grads); },
      kF32Tolerance, {}, {{"working", kBf16Tolerance}});
  Backends backends;
  const Outputs one = adamw_pieces_run(*backends.gpu, true, master0, grads);
  const Outputs each = adamw_pieces_run(*backends.gpu, false, master0, grads);
  for (const auto& [name, values] : one) {
    EXPECT_TRUE(bit_identical(values, each.at(name)))
        << name << ": one launch differs from one launch per piece";
  }
  for (size_t i = kGapBegin; i < kGapEnd; ++i) {
    ASSERT_EQ(one.at("master")[i], master0[i]) << "value " << i << " is in no piece";
  }
}

TEST(CudaOps, SumSquaresMatchesCpuAndIsReproducible) {
  ACCUM_REQUIRE_CUDA();
  Backends backends;
  // More than one pass of the fixed grid in 16-byte groups, and 3 values after the last group.
  const size_t n = (size_t(1) << 23) + 3;
  const auto grads = random_bf16_values(n + 3, 90, 0.01f);
  Buffer cpu_grads = upload_f32(*backends.cpu, grads);
  Buffer gpu_grads = upload_f32(*backends.gpu, grads);
  // From the buffer's start (16-byte aligned: groups of 4) and from its second, third and
  // fourth values (1-3 values before the first group, as a ZeRO-1 shard may start); and
  // ranges of 1-3 values.
  for (size_t offset : {0, 1, 2, 3}) {
    for (size_t count : {n, size_t(1), size_t(3)}) {
      SCOPED_TRACE("offset " + std::to_string(offset) + ", " + std::to_string(count) + " values");
      const double want = backends.cpu->sum_squares(cpu_grads.f32() + offset, count);
      const double got = backends.gpu->sum_squares(gpu_grads.f32() + offset, count);
      const double again = backends.gpu->sum_squares(gpu_grads.f32() + offset, count);
      ASSERT_GT(want, 0.0);
      EXPECT_LE(std::abs(got - want) / want, kF32Tolerance) << "got " << got << " want " << want;
      EXPECT_EQ(std::memcmp(&got, &again, sizeof(double)), 0)
          << "two runs differ: " << got << " vs " << again;
    }
  }
}

}  // namespace
}  // namespace accum::kernels::gpu_testing
