// tests/gpu/op_harness.h — runs one op scenario on the CPU oracle and on CUDA and compares.
//
// A scenario is a function (Backend&, backward_calls) -> named outputs (as fp32 vectors).
// check_against_cpu() asserts, for every named output:
//   * CUDA vs CPU within `tolerance` relative L2 (poisoned outputs that stay NaN fail);
//   * after two backward calls, the gradients in `Gradients::added` hold 2x the CPU value
//     (the op ADDS, +=) and those in `Gradients::written` are bit-identical to one call
//     (the op WRITES; scenarios poison them first, so an unwritten element stays NaN);
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

// The backward contract of kernels/backend.h, by output name.
struct Gradients {
  std::set<std::string> added = {};    // parameter gradients, layernorm_backward's dinp
  std::set<std::string> written = {};  // the other activation gradients
};

inline bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

inline void check_against_cpu(const Scenario& scenario, double tolerance,
                              const Gradients& gradients = {},
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
  if (gradients.added.empty() && gradients.written.empty()) return;
  const Outputs twice = scenario(*backends.gpu, 2);
  for (const auto& name : gradients.added) {
    ASSERT_TRUE(want.count(name)) << "no output named " << name;
    EXPECT_LE(rel_l2(twice.at(name), scaled(want.at(name), 2.f)), tolerance)
        << "gradient " << name << " after two backward calls is not 2x (the op must +=)";
  }
  for (const auto& name : gradients.written) {
    ASSERT_TRUE(want.count(name)) << "no output named " << name;
    EXPECT_TRUE(bit_identical(twice.at(name), got.at(name)))
        << "gradient " << name << " after two backward calls differs from one (the op must "
        << "write, not add)";
  }
}

}  // namespace accum::kernels::gpu_testing
