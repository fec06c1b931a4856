// Ops over rows further apart than their columns (kernels/backend.h: matmul_forward's
// out_stride, matmul_backward's dout_stride, crossentropy_forward_backward's stride): the
// model keeps the logits of an odd vocabulary in padded rows (Backend::row_stride). On the
// CPU back end, each op with padded rows gives the bits of the same op on packed rows and
// reads none of the padding (NaN there would spread into every result); the matmuls write
// none of it, the classifier writes it 0 in dlogits; a stride shorter than a row is refused
// with a message naming the op.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/test_util.h"

namespace accum::kernels {
namespace {

using testing::finite_padding;
using testing::packed_rows;
using testing::padded_rows;
using testing::random_tokens;
using testing::random_values;
using testing::thrown_message;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// How many padding elements of rows `stride` apart are 0.
int zeros_in_padding(const std::vector<float>& strided, int rows, int columns, int stride) {
  int zeros = 0;
  for (int r = 0; r < rows; ++r) {
    for (int c = columns; c < stride; ++c) zeros += strided[size_t(r) * stride + c] == 0.f;
  }
  return zeros;
}

class RowStride : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> backend_ = make_cpu_backend();
  // An odd number of columns in rows padded to a multiple of 64, as for GPT-2's 50257.
  static constexpr int N = 37, C = 24, OC = 97, kStride = 128;
};

TEST_F(RowStride, MatmulForwardWritesOnlyTheColumnsOfEachRow) {
  const auto inp = random_values<float>(N * C, 1), bias = random_values<float>(OC, 2);
  for (const WeightLayout layout : {WeightLayout::kOutIn, WeightLayout::kInOut}) {
    const auto weight = random_values<float>(OC * C, 3);
    for (const float* b : {static_cast<const float*>(nullptr), bias.data()}) {
      std::vector<float> packed(N * OC), strided(size_t(N) * kStride, kNaN);
      backend_->matmul_forward(packed.data(), inp.data(), weight.data(), b, N, C, OC, layout);
      backend_->matmul_forward(strided.data(), inp.data(), weight.data(), b, N, C, OC, layout,
                               kStride);
      EXPECT_TRUE(same_bits(packed_rows(strided, N, OC, kStride), packed))
          << "layout " << int(layout) << (b ? " with" : " without") << " bias";
      EXPECT_EQ(finite_padding(strided, N, OC, kStride), 0) << "the padding was written";
    }
  }
}

TEST_F(RowStride, MatmulBackwardReadsOnlyTheColumnsOfEachRow) {
  const auto inp = random_values<float>(N * C, 4), weight = random_values<float>(OC * C, 5),
             dout = random_values<float>(N * OC, 6);
  const auto dout_strided = padded_rows(dout, N, OC, kStride, kNaN);
  for (const WeightLayout layout : {WeightLayout::kOutIn, WeightLayout::kInOut}) {
    for (const GradMode mode : {GradMode::kWrite, GradMode::kAdd}) {
      std::vector<float> dinp[2], dweight[2], dbias[2];
      for (int run = 0; run < 2; ++run) {
        dinp[run].assign(N * C, 0.f);
        dweight[run] = random_values<float>(OC * C, 7);  // what kAdd adds to
        dbias[run] = random_values<float>(OC, 8);
        backend_->matmul_backward(dinp[run].data(), dweight[run].data(), dbias[run].data(),
                                  run == 0 ? dout.data() : dout_strided.data(), inp.data(),
                                  weight.data(), N, C, OC, layout, mode, run == 0 ? 0 : kStride);
      }
      const std::string where = std::string(layout == WeightLayout::kOutIn ? "kOutIn" : "kInOut") +
                                (mode == GradMode::kAdd ? " kAdd" : " kWrite");
      EXPECT_TRUE(same_bits(dinp[1], dinp[0])) << "dinp, " << where;
      EXPECT_TRUE(same_bits(dweight[1], dweight[0])) << "dweight, " << where;
      EXPECT_TRUE(same_bits(dbias[1], dbias[0])) << "dbias, " << where;
    }
  }
}

TEST_F(RowStride, CrossEntropyReadsOnlyTheVocabularyAndZeroesThePadding) {
  const int V = OC;
  const auto logits = random_values<float>(N * V, 9, -3, 3);
  const auto targets = random_tokens(N, V, 10);
  std::vector<uint8_t> mask(N, 1);
  for (int i = 0; i < N; i += 4) mask[i] = 0;
  const float dloss = 0.25f;
  std::vector<float> losses(N), dlogits(N * V);
  backend_->crossentropy_forward_backward(losses.data(), dlogits.data(), logits.data(),
                                          targets.data(), mask.data(), dloss, N, V);
  // Separate dlogits, and dlogits over the logits (as the model runs it).
  for (const bool in_place : {false, true}) {
    auto strided = padded_rows(logits, N, V, kStride, kNaN);
    std::vector<float> strided_losses(N), separate(size_t(N) * kStride, kNaN);
    float* d = in_place ? strided.data() : separate.data();
    backend_->crossentropy_forward_backward(strided_losses.data(), d, strided.data(),
                                            targets.data(), mask.data(), dloss, N, V, kStride);
    const std::vector<float> got(d, d + size_t(N) * kStride);
    EXPECT_TRUE(same_bits(strided_losses, losses)) << "losses, in place " << in_place;
    EXPECT_TRUE(same_bits(packed_rows(got, N, V, kStride), dlogits))
        << "dlogits, in place " << in_place;
    const auto padding = zeros_in_padding(got, N, V, kStride);
    EXPECT_EQ(padding, N * (kStride - V)) << "dlogits' padding is not all 0, in place " << in_place;
  }
}

TEST_F(RowStride, AStrideShorterThanARowIsRefused) {
  std::vector<float> buffer(size_t(N) * kStride), small(size_t(N) * C), weight(OC * C);
  std::vector<float> losses(N);
  const std::vector<int32_t> targets(N, 0);
  auto message = thrown_message<std::invalid_argument>;
  EXPECT_EQ(message([&] {
              backend_->matmul_forward(buffer.data(), small.data(), weight.data(), nullptr, N, C,
                                       OC, WeightLayout::kOutIn, OC - 1);
            }),
            "matmul_forward: row stride 96 is shorter than a row of 97 columns "
            "(expected 0 or >= 97)");
  EXPECT_EQ(message([&] {
              backend_->matmul_backward(small.data(), weight.data(), nullptr, buffer.data(),
                                        small.data(), weight.data(), N, C, OC, WeightLayout::kOutIn,
                                        GradMode::kWrite, 50);
            }),
            "matmul_backward: row stride 50 is shorter than a row of 97 columns "
            "(expected 0 or >= 97)");
  EXPECT_EQ(message([&] {
              backend_->crossentropy_forward_backward(losses.data(), nullptr, buffer.data(),
                                                      targets.data(), nullptr, 1.f, N, OC, 1);
            }),
            "crossentropy_forward_backward: row stride 1 is shorter than a row of 97 columns "
            "(expected 0 or >= 97)");
}

}  // namespace
}  // namespace accum::kernels
