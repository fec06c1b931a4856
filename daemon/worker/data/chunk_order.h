// data/chunk_order.h — the shuffled order of chunks: one permutation of
// [0, chunks) per epoch, a pure function of (seed, epoch).
//
// We draw it ourselves (splitmix64 seeding a xoshiro256** generator, unbiased
// bounded integers by rejection, Fisher–Yates) rather than with std::
// distributions, whose algorithms are implementation-defined: the same spec must
// read the same tokens on every machine, compiler and standard library, and a
// resumed run must read exactly what the uninterrupted one would have.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace accum::data {

// splitmix64 (Steele, Lea, Flood 2014): advances *state, returns the next output.
uint64_t splitmix64_next(uint64_t* state);

// xoshiro256** 1.0 (Blackman, Vigna 2018), seeded from splitmix64.
class Xoshiro256 {
 public:
  explicit Xoshiro256(uint64_t seed);
  // Raw state, for test vectors. REQUIRES: not all zero.
  explicit Xoshiro256(const std::array<uint64_t, 4>& state);
  uint64_t next();
  // Uniform in [0, bound), unbiased (rejects the short top range). REQUIRES: bound > 0.
  uint64_t below(uint64_t bound);

 private:
  uint64_t s_[4];
};

// The permutation of chunk indices for `epoch`:
//   rng = Xoshiro256(splitmix64 finalizer of seed XOR epoch * 0x9E3779B97F4A7C15)
//   perm = [0..chunks); for i = chunks-1 .. 1: swap(perm[i], perm[rng.below(i+1)])
// REQUIRES: chunks >= 0, epoch >= 0.
std::vector<int64_t> chunk_permutation(int64_t chunks, uint64_t seed, int64_t epoch);

}  // namespace accum::data
