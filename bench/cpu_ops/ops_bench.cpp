// bench/cpu_ops/ops_bench.cpp — per-op timings of the CPU back end at the shapes of
// the two benchmark models, forward and backward, plus an estimate of one
// training step (sum over the ops a GPT-2 step runs). torch_ops_bench.py times the
// same ops in PyTorch for the side-by-side. Build and run: bench/cpu_ops/run.sh.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

using accum::kernels::Backend;
using accum::kernels::GradMode;
using accum::kernels::WeightLayout;

namespace {

struct Config {
  const char* name;
  int B, T, C, NH, V, layers;
};

std::vector<float> random_floats(size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// Median milliseconds of `reps` runs after one warm-up.
double time_ms(const std::function<void()>& fn, int reps) {
  fn();
  std::vector<double> samples;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    samples.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

void run(const Config& cfg, Backend& be, int reps) {
  const int B = cfg.B, T = cfg.T, C = cfg.C, NH = cfg.NH, V = cfg.V, N = B * T;
  std::printf("== %s: B=%d T=%d C=%d NH=%d V=%d layers=%d threads=%d\n", cfg.name, B, T, C, NH, V,
              cfg.layers, omp_get_max_threads());
  auto x = random_floats(size_t(N) * 4 * C, 1), dx = random_floats(size_t(N) * 4 * C, 2);
  auto y = random_floats(size_t(N) * 4 * C, 3), dy = random_floats(size_t(N) * 4 * C, 4);
  auto w = random_floats(size_t(4) * C * C, 5, 0.02f), dw = random_floats(size_t(4) * C * C, 6);
  auto bias = random_floats(4 * C, 7), dbias = random_floats(4 * C, 8);
  std::vector<float> mean(N), rstd(N);
  std::vector<float> probs(size_t(B) * NH * T * T);
  std::vector<int32_t> tokens(N);
  for (int i = 0; i < N; ++i) tokens[i] = (i * 7919) % V;
  auto wte = random_floats(size_t(V) * C, 9, 0.02f), dwte = random_floats(size_t(V) * C, 10);
  auto logits = random_floats(size_t(N) * V, 11);
  std::vector<float> losses(N);

  struct Row {
    std::string op;
    double ms;
    int per_step;
  };
  std::vector<Row> rows;
  auto add = [&](const std::string& op, int per_step, const std::function<void()>& fn) {
    rows.push_back({op, time_ms(fn, reps), per_step});
  };
  const int L = cfg.layers;
  add("layernorm_fwd", 2 * L + 1, [&] {
    be.layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), bias.data(), N, C);
  });
  add("layernorm_bwd", 2 * L + 1, [&] {
    be.layernorm_backward(dx.data(), dw.data(), dbias.data(), nullptr, dy.data(), x.data(),
                          w.data(), mean.data(), rstd.data(), N, C, GradMode::kAdd);
  });
  add("matmul_qkv_fwd", L, [&] {
    be.matmul_forward(y.data(), x.data(), w.data(), bias.data(), N, C, 3 * C, WeightLayout::kInOut);
  });
  add("matmul_qkv_bwd", L, [&] {
    be.matmul_backward(dx.data(), dw.data(), dbias.data(), dy.data(), x.data(), w.data(), N, C,
                       3 * C, WeightLayout::kInOut, GradMode::kAdd);
  });
  add("attention_fwd", L,
      [&] { be.attention_forward(y.data(), probs.data(), x.data(), B, T, C, NH); });
  add("attention_bwd", L, [&] {
    be.attention_backward(dx.data(), dy.data(), x.data(), y.data(), probs.data(), B, T, C, NH);
  });
  add("matmul_proj_fwd", L, [&] {
    be.matmul_forward(y.data(), x.data(), w.data(), bias.data(), N, C, C, WeightLayout::kInOut);
  });
  add("matmul_proj_bwd", L, [&] {
    be.matmul_backward(dx.data(), dw.data(), dbias.data(), dy.data(), x.data(), w.data(), N, C, C,
                       WeightLayout::kInOut, GradMode::kAdd);
  });
  add("matmul_fc_fwd", L, [&] {
    be.matmul_forward(y.data(), x.data(), w.data(), bias.data(), N, C, 4 * C, WeightLayout::kInOut);
  });
  add("matmul_fc_bwd", L, [&] {
    be.matmul_backward(dx.data(), dw.data(), dbias.data(), dy.data(), x.data(), w.data(), N, C,
                       4 * C, WeightLayout::kInOut, GradMode::kAdd);
  });
  add("gelu_fwd", L, [&] { be.gelu_forward(y.data(), x.data(), size_t(N) * 4 * C); });
  add("gelu_bwd", L, [&] { be.gelu_backward(dx.data(), x.data(), dy.data(), size_t(N) * 4 * C); });
  add("matmul_fcproj_fwd", L, [&] {
    be.matmul_forward(y.data(), x.data(), w.data(), bias.data(), N, 4 * C, C, WeightLayout::kInOut);
  });
  add("matmul_fcproj_bwd", L, [&] {
    be.matmul_backward(dx.data(), dw.data(), dbias.data(), dy.data(), x.data(), w.data(), N, 4 * C,
                       C, WeightLayout::kInOut, GradMode::kAdd);
  });
  add("residual_fwd", 2 * L,
      [&] { be.residual_forward(y.data(), x.data(), dx.data(), size_t(N) * C); });
  add("encoder_fwd", 1,
      [&] { be.encoder_forward(y.data(), tokens.data(), wte.data(), w.data(), B, T, C); });
  add("encoder_bwd", 1,
      [&] { be.encoder_backward(dwte.data(), dw.data(), dy.data(), tokens.data(), B, T, C); });
  std::vector<float> lm_out(size_t(N) * V);
  add("lm_head_fwd", 1, [&] {
    be.matmul_forward(lm_out.data(), x.data(), wte.data(), nullptr, N, C, V, WeightLayout::kOutIn);
  });
  add("crossentropy", 1, [&] {
    be.crossentropy_forward_backward(losses.data(), lm_out.data(), logits.data(), tokens.data(),
                                     nullptr, 1.0f / N, N, V);
  });
  add("lm_head_bwd", 1, [&] {
    be.matmul_backward(dx.data(), dwte.data(), nullptr, lm_out.data(), x.data(), wte.data(), N, C,
                       V, WeightLayout::kOutIn, GradMode::kAdd);
  });
  const size_t params = size_t(V) * C + size_t(L) * 12 * C * C;
  auto p = random_floats(params, 12), g = random_floats(params, 13);
  std::vector<float> m(params), v(params);
  accum::kernels::AdamWParams hp;
  hp.lr = 1e-4f;
  add("adamw(all params)", 1,
      [&] { be.adamw_update(p.data(), nullptr, g.data(), m.data(), v.data(), params, hp); });
  add("sum_squares(all)", 1, [&] { (void)be.sum_squares(g.data(), params); });
  double step = 0;
  for (const auto& r : rows) {
    std::printf("%-20s %9.3f ms  x%-3d = %9.2f ms\n", r.op.c_str(), r.ms, r.per_step,
                r.ms * r.per_step);
    step += r.ms * r.per_step;
  }
  std::printf("%-20s %9.2f ms  -> %.0f tokens/s (op sum, no model overhead)\n", "STEP ESTIMATE",
              step, N / (step / 1000));
}

}  // namespace

int main(int argc, char** argv) {
  auto backend = accum::kernels::make_cpu_backend();
  const bool big = argc > 1 && std::strcmp(argv[1], "124m") == 0;
  if (big) {
    run({"gpt2-124m", 2, 256, 768, 12, 50257, 12}, *backend, 5);
  } else {
    run({"small", 8, 256, 256, 4, 256, 4}, *backend, 15);
  }
  return 0;
}
