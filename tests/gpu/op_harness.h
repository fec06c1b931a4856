// tests/gpu/op_harness.h — runs one op scenario on the CPU oracle and on CUDA and compares.
//
// A scenario is a function (Backend&, backward_calls) -> named outputs (as fp32 vectors).
// check_against_cpu() asserts, for every named output:
//   * CUDA vs CPU within `tolerance` relative L2 (poisoned outputs that stay NaN fail);
//   * gradient outputs (names listed in `accumulated`) hold 2x the CPU value after two
//     backward calls: the op ADDS (+=) instead of overwriting;
//   * two CUDA runs from the same inputs are bit-identical (determinism).
#pragma once

#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "tests/gpu/gpu_test_util.h"

namespace accum::kernels::gpu_testing {

using Outputs = std::map<std::string, std::vector<float>>;
using Scenario = std::function<Outputs(Backend& backend, int backward_calls)>;

inline bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

inline void check_against_cpu(const Scenario& scenario, double tolerance,
                              const std::set<std::string>& accumulated = {},
                              const std::map<std::string, double>& tolerance_override = {}) {
  Backends backends;
  const Outputs want = scenario(*backends.cpu, 1);
  const Outputs got = scenario(*backends.gpu, 1);
  const Outputs again = scenario(*backends.gpu, 1);
  ASSERT_EQ(want.size(), got.size());
  for (const auto& [name, expected] : want) {
    const auto found = got.find(name);
    ASSERT_TRUE(found != got.end()) << "CUDA scenario did not produce " << name;
    const auto limit = tolerance_override.count(name) ? tolerance_override.at(name) : tolerance;
    EXPECT_LE(rel_l2(found->second, expected), limit) << "output " << name << " vs the CPU";
    EXPECT_TRUE(bit_identical(found->second, again.at(name)))
        << "output " << name << " differs between two identical CUDA runs";
  }
  if (accumulated.empty()) return;
  const Outputs twice = scenario(*backends.gpu, 2);
  for (const auto& name : accumulated) {
    ASSERT_TRUE(want.count(name)) << "no output named " << name;
    EXPECT_LE(rel_l2(twice.at(name), scaled(want.at(name), 2.f)), tolerance)
        << "gradient " << name << " after two backward calls is not 2x (the op must +=)";
  }
}

}  // namespace accum::kernels::gpu_testing
