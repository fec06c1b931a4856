// data/chunk_order.cpp — splitmix64, xoshiro256** and the per-epoch Fisher–Yates
// permutation of chunk indices (see chunk_order.h for the exact recipe).
#include "daemon/worker/data/chunk_order.h"

#include <cstddef>
#include <numeric>
#include <utility>

namespace accum::data {
namespace {

uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// The splitmix64 output function applied to one value (a good 64-bit mixer).
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

uint64_t splitmix64_next(uint64_t* state) {
  *state += 0x9E3779B97F4A7C15ull;
  return mix64(*state);
}

Xoshiro256::Xoshiro256(uint64_t seed) {
  uint64_t sm = seed;
  for (uint64_t& word : s_) word = splitmix64_next(&sm);  // never all zero in practice
}

Xoshiro256::Xoshiro256(const std::array<uint64_t, 4>& state) {
  for (int i = 0; i < 4; ++i) s_[i] = state[i];
}

uint64_t Xoshiro256::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

uint64_t Xoshiro256::below(uint64_t bound) {
  // Values below `threshold` = 2^64 mod bound would make the low residues more
  // likely; reject them so every residue has the same number of preimages.
  const uint64_t threshold = (0 - bound) % bound;
  while (true) {
    uint64_t r = next();
    if (r >= threshold) return r % bound;
  }
}

std::vector<int64_t> chunk_permutation(int64_t chunks, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> perm(static_cast<size_t>(chunks));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  Xoshiro256 rng(mix64(seed ^ (static_cast<uint64_t>(epoch) * 0x9E3779B97F4A7C15ull)));
  for (int64_t i = chunks - 1; i > 0; --i) {
    int64_t j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(perm[i], perm[j]);
  }
  return perm;
}

}  // namespace accum::data
