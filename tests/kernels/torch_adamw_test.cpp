// AdamW against torch.optim.AdamW itself (Debian python3-torch at /usr/bin/python3).
//
// Not bit-exact by design: torch's vectorized add_/addcmul_ use FMA in the vector
// body and plain multiply-add in the tail, while this back end never contracts.
// A formula slip (bias correction, decay order, eps placement) shows as errors of
// 1e-3 and more; float rounding stays near 1e-7. SKIPPED when torch is missing.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/kernels/test_util.h"

namespace accum::kernels {
namespace {

constexpr const char* kPython = "/usr/bin/python3";

constexpr const char* kScript = R"(
import sys, numpy as np, torch
n, steps = int(sys.argv[2]), int(sys.argv[3])
data = np.fromfile(sys.argv[1] + '/in.bin', dtype=np.float32)
p, grads = data[:n], data[n:].reshape(steps, n)
f32 = lambda x: float(np.float32(x))
param = torch.nn.Parameter(torch.from_numpy(p.copy()))
opt = torch.optim.AdamW([param], lr=f32(3e-3), betas=(f32(0.9), f32(0.95)), eps=f32(1e-8),
                        weight_decay=f32(0.1))
for g in grads:
    param.grad = torch.from_numpy(g.copy()) * np.float32(0.5)
    opt.step()
state = opt.state[param]
np.concatenate([param.detach().numpy(), state['exp_avg'].numpy(),
                state['exp_avg_sq'].numpy()]).astype(np.float32).tofile(sys.argv[1] + '/out.bin')
)";

TEST(AdamW, AgreesWithTorchOptimAdamW) {
  if (!std::filesystem::exists(kPython) ||
      std::system((std::string(kPython) + " -c 'import torch, numpy' 2>/dev/null").c_str()) != 0) {
    GTEST_SKIP() << kPython << " with torch and numpy is not available";
  }
  const size_t n = 50000;
  const int steps = 3;
  const auto dir =
      std::filesystem::temp_directory_path() / ("accum_adamw_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::vector<float> p = testing::random_values<float>(n, 1);
  std::vector<std::vector<float>> grads;
  {
    std::ofstream in(dir / "in.bin", std::ios::binary);
    in.write(reinterpret_cast<const char*>(p.data()), sizeof(float) * n);
    for (int s = 0; s < steps; ++s) {
      grads.push_back(testing::random_values<float>(n, 10 + s, -2, 2));
      for (size_t i = 0; i < n; i += 5) grads.back()[i] *= 1e-5f;
      in.write(reinterpret_cast<const char*>(grads.back().data()), sizeof(float) * n);
    }
  }
  const std::string script_path = (dir / "adamw.py").string();
  std::ofstream(script_path) << kScript;
  const std::string command = std::string(kPython) + " " + script_path + " " + dir.string() + " " +
                              std::to_string(n) + " " + std::to_string(steps);
  ASSERT_EQ(std::system(command.c_str()), 0) << command;

  std::vector<float> m(n, 0.0f), v(n, 0.0f);
  AdamWParams hp;
  hp.lr = 3e-3f;
  hp.beta1 = 0.9f;
  hp.beta2 = 0.95f;
  hp.eps = 1e-8f;
  hp.weight_decay = 0.1f;
  hp.grad_scale = 0.5f;
  for (int s = 0; s < steps; ++s) {
    hp.step = s + 1;
    cpu::adamw_update(p.data(), grads[s].data(), m.data(), v.data(), n, hp);
  }
  std::vector<float> torch_out(3 * n);
  std::ifstream out(dir / "out.bin", std::ios::binary);
  out.read(reinterpret_cast<char*>(torch_out.data()), sizeof(float) * 3 * n);
  ASSERT_TRUE(out) << "short read of " << (dir / "out.bin");
  std::filesystem::remove_all(dir);
  const std::vector<float> torch_p(torch_out.begin(), torch_out.begin() + n);
  const std::vector<float> torch_m(torch_out.begin() + n, torch_out.begin() + 2 * n);
  const std::vector<float> torch_v(torch_out.begin() + 2 * n, torch_out.end());
  EXPECT_LT(testing::relative_error(p, torch_p), 1e-6);
  EXPECT_LT(testing::relative_error(m, torch_m), 1e-6);
  EXPECT_LT(testing::relative_error(v, torch_v), 1e-6);
}

}  // namespace
}  // namespace accum::kernels
