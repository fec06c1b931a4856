// tests/data/chunk_order_test.cpp — the shuffle's generators match their
// published reference outputs, and the permutation recipe of chunk_order.h
// matches an independent re-implementation (Python, values below).
#include "daemon/worker/data/chunk_order.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

namespace accum::data {
namespace {

TEST(ChunkOrder, Splitmix64MatchesReference) {
  uint64_t state = 0;
  EXPECT_EQ(splitmix64_next(&state), 0xE220A8397B1DCDAFull);  // first output for seed 0
}

TEST(ChunkOrder, Xoshiro256StarStarMatchesReference) {
  // Reference C implementation (prng.di.unimi.it) from state {1, 2, 3, 4}.
  Xoshiro256 rng(std::array<uint64_t, 4>{1, 2, 3, 4});
  EXPECT_EQ(rng.next(), 11520ull);
  EXPECT_EQ(rng.next(), 0ull);
  EXPECT_EQ(rng.next(), 1509978240ull);
  EXPECT_EQ(rng.next(), 1215971899390074240ull);
}

TEST(ChunkOrder, BelowStaysInRangeAndCoversIt) {
  Xoshiro256 rng(7);
  std::vector<int> hits(6, 0);
  for (int i = 0; i < 6000; ++i) {
    uint64_t v = rng.below(6);
    ASSERT_LT(v, 6u);
    ++hits[v];
  }
  for (int h : hits) EXPECT_GT(h, 800);  // ~1000 each; a broken bound would starve some
}

TEST(ChunkOrder, PermutationMatchesIndependentImplementation) {
  // Computed with a Python transcription of the recipe in chunk_order.h.
  EXPECT_EQ(chunk_permutation(10, 42, 0), (std::vector<int64_t>{6, 7, 8, 3, 9, 4, 5, 2, 1, 0}));
  EXPECT_EQ(chunk_permutation(10, 42, 1), (std::vector<int64_t>{9, 3, 6, 4, 0, 7, 5, 2, 8, 1}));
  EXPECT_EQ(chunk_permutation(10, 7, 0), (std::vector<int64_t>{1, 2, 6, 4, 8, 7, 3, 0, 9, 5}));
}

TEST(ChunkOrder, LargePermutationIsAPermutation) {
  auto perm = chunk_permutation(100003, 123, 5);
  std::vector<int64_t> sorted = perm;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> expected(100003);
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_EQ(sorted, expected);
  EXPECT_NE(perm, expected);
  EXPECT_TRUE(chunk_permutation(0, 1, 0).empty());
  EXPECT_EQ(chunk_permutation(1, 1, 0), std::vector<int64_t>{0});
}

}  // namespace
}  // namespace accum::data
