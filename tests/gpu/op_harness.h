// tests/gpu/op_harness.h — runs one op scenario on the CPU oracle and on CUDA and compares.
//
// A scenario is a function (Backend&, BackwardRuns) -> named outputs (as fp32 vectors).
// check_against_cpu() asserts, for every named output:
//   * CUDA vs CPU within `tolerance` relative L2 (poisoned outputs that stay NaN fail);
//   * after two backward calls (kAdd), the gradients in `Gradients::params` and
//     `Gradients::added` hold 2x the CPU value (the op ADDS, +=) and those in
//     `Gradients::written` are bit-identical to one call (the op WRITES; scenarios poison
//     them first, so an unwritten element stays NaN);
//   * with `Gradients::params`, one kWrite call on NaN-poisoned parameter gradients gives
//     every output the values of one kAdd call on zeroed ones, on CUDA and on the CPU;
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

// How a scenario runs its backward ops: `calls` times, each with mode(call). Parameter
// gradients (param_grads) start zeroed and every call adds, or, with `write_first`, start
// NaN-poisoned and the first call writes them (a window's first micro-batch).
struct BackwardRuns {
  int calls = 1;
  bool write_first = false;
  GradMode mode(int call) const {
    return write_first && call == 0 ? GradMode::kWrite : GradMode::kAdd;
  }
  Buffer param_grads(Backend& backend, size_t n) const {
    return write_first ? poisoned_f32(backend, n) : Buffer(backend, n * sizeof(float));
  }
};
using Scenario = std::function<Outputs(Backend& backend, const BackwardRuns& runs)>;

// The backward contract of kernels/backend.h, by output name.
struct Gradients {
  std::set<std::string> params = {};   // parameter gradients: stored by GradMode
  std::set<std::string> added = {};    // always added: layernorm_backward's dinp, encoder
  std::set<std::string> written = {};  // the other activation gradients
};

inline bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Equal element by element (0.f == -0.f: x written and 0 + x may differ in the zero's sign).
inline bool same_values(const std::vector<float>& a, const std::vector<float>& b) { return a == b; }

inline void check_against_cpu(const Scenario& scenario, double tolerance,
                              const Gradients& gradients = {},
                              const std::map<std::string, double>& tolerance_override = {}) {
  Backends backends;
  const Outputs want = scenario(*backends.cpu, {});
  const Outputs got = scenario(*backends.gpu, {});
  const Outputs again = scenario(*backends.gpu, {});
  ASSERT_EQ(want.size(), got.size());
  for (const auto& [name, expected] : want) {
    const auto found = got.find(name);
    ASSERT_TRUE(found != got.end()) << "CUDA scenario did not produce " << name;
    const auto limit = tolerance_override.count(name) ? tolerance_override.at(name) : tolerance;
    EXPECT_LE(rel_l2(found->second, expected), limit) << "output " << name << " vs the CPU";
    EXPECT_TRUE(bit_identical(found->second, again.at(name)))
        << "output " << name << " differs between two identical CUDA runs";
  }
  if (gradients.params.empty() && gradients.added.empty() && gradients.written.empty()) return;
  const Outputs twice = scenario(*backends.gpu, {.calls = 2});
  std::set<std::string> summed = gradients.added;
  summed.insert(gradients.params.begin(), gradients.params.end());
  for (const auto& name : summed) {
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
  if (gradients.params.empty()) return;
  for (Backend* backend : {backends.gpu.get(), backends.cpu.get()}) {
    const Outputs& added_once = backend == backends.gpu.get() ? got : want;
    const Outputs written = scenario(*backend, {.write_first = true});
    for (const auto& [name, values] : added_once) {
      EXPECT_TRUE(same_values(written.at(name), values))
          << backend->name() << ": output " << name << " after a kWrite backward on poisoned "
          << "parameter gradients differs from a kAdd backward on zeroed ones";
    }
  }
}

}  // namespace accum::kernels::gpu_testing
