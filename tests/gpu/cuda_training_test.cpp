// tests/gpu/cuda_training_test.cpp — whole training steps of a tiny GPT-2 (bench/gpu's
// Gpt2Step, written against the op interface) on CUDA vs the CPU oracle:
//   * 10 optimizer steps: every step's loss within 2% of the CPU's;
//   * the same 3 steps run twice on CUDA give bit-identical losses and weights;
//   * K = 2 micro-batches of B accumulate the gradient of one batch of 2B (the fp32
//     buffer holds the same sum), on CUDA as on the CPU;
//   * stopping after step 2 and resuming from the saved weights and Adam moments in a
//     new model gives the uninterrupted run's steps 3-4, bit for bit;
//   * the op sequences recorded as CUDA graphs (the default; ACCUM_CUDA_GRAPHS=0 launches the ops
//   one by one) train to the same bits.
//   * the weight gradients as side work on a second stream (ACCUM_CUDA_SIDE_STREAM=1, and
//     =equal at the main stream's priority), with and without graphs, train to the bits of
//     the one-stream run. On the emulator a captured
//     side stream's work runs at its join (tests/simt/simt_runtime.h), so a join placed too
//     late in Gpt2::layer_backward changes the bits here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bench/gpu/gpt2_step.h"
#include "tests/gpu/gpu_test_util.h"

namespace accum::kernels::gpu_testing {
namespace {

constexpr int kB = 2, kT = 48;

// vocab 96 or, like GPT-2's 50257, odd (the CUDA back end then keeps the logits in padded
// rows: Backend::row_stride).
bench::Gpt2Config tiny_config(int vocab = 96) {
  bench::Gpt2Config config;
  config.n_layer = 2;
  config.n_head = 2;
  config.d_model = 64;
  config.vocab = vocab;
  config.max_seq = 64;
  return config;
}

std::vector<std::vector<int32_t>> tiny_batches(int vocab = 96) {
  std::vector<std::vector<int32_t>> batches(2, std::vector<int32_t>(kB * kT + 1));
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int32_t> token(0, vocab - 1);
  for (auto& batch : batches) {
    for (auto& t : batch) t = token(rng);
  }
  return batches;
}

// Losses of `steps` optimizer steps (K = 2 micro-batches each); weights after them.
// before_step(step), if given, runs before each step.
std::vector<float> train(Backend& backend, int steps, std::vector<float>* weights = nullptr,
                         const std::function<void(int)>& before_step = {},
                         const bench::Gpt2Config& config = tiny_config()) {
  bench::Gpt2Step model(backend, config, kB, kT, 99);
  const auto batches = tiny_batches(config.vocab);
  const float dloss = 1.f / (2.f * kB * kT);
  std::vector<float> losses;
  for (int step = 1; step <= steps; ++step) {
    if (before_step) before_step(step);
    model.begin_window();
    for (const auto& batch : batches) model.micro_step(batch, dloss);
    losses.push_back(model.take_mean_loss());  // the window's mean, as the worker reports it
    model.optimizer_step(step, 3e-3f);
  }
  if (weights) *weights = model.master_weights();
  return losses;
}

void expect_ten_steps_track_the_cpu(const bench::Gpt2Config& config) {
  Backends backends;
  const auto want = train(*backends.cpu, 10, nullptr, {}, config);
  const auto got = train(*backends.gpu, 10, nullptr, {}, config);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_LE(std::abs(got[i] - want[i]) / want[i], 0.02)
        << "step " << i + 1 << ": CUDA loss " << got[i] << " vs CPU " << want[i];
  }
  EXPECT_LE(want.back(), want.front() * 0.95f) << "the CPU loss did not fall: bad test setup";
}

TEST(CudaTraining, TenStepsTrackTheCpuLossCurve) {
  ACCUM_REQUIRE_CUDA();
  expect_ten_steps_track_the_cpu(tiny_config());
}

// 97: on CUDA the LM head computes 128 logits per row (the rows after wte's 97 are wpe's,
// masked by the classifier); on the CPU 97.
TEST(CudaTraining, TenStepsTrackTheCpuLossCurveWithAnOddVocabulary) {
  ACCUM_REQUIRE_CUDA();
  expect_ten_steps_track_the_cpu(tiny_config(97));
}

// No layers and a short wpe: fewer weights follow wte (65 rows + 48 + ln_f) than the LM head's
// 128 rows, so the working copy ends in zeroed slack it reads (gpt2_working_elements).
TEST(CudaTraining, TenStepsTrackTheCpuLossCurveWhenTheLmHeadReadsSlack) {
  ACCUM_REQUIRE_CUDA();
  bench::Gpt2Config config = tiny_config(65);
  config.n_layer = 0;
  config.max_seq = kT;
  Backends backends;
  EXPECT_GT(model::gpt2_working_elements(*backends.gpu, config.model_config()),
            size_t(65 + kT + 2) * config.d_model)
      << "bad test setup: the working copy needs no slack";
  expect_ten_steps_track_the_cpu(config);
}

TEST(CudaTraining, RepeatedRunsAreBitIdentical) {
  ACCUM_REQUIRE_CUDA();
  Backends backends;
  std::vector<float> weights_a, weights_b;
  const auto losses_a = train(*backends.gpu, 3, &weights_a);
  const auto losses_b = train(*backends.gpu, 3, &weights_b);
  ASSERT_EQ(losses_a.size(), losses_b.size());
  EXPECT_EQ(std::memcmp(losses_a.data(), losses_b.data(), losses_a.size() * sizeof(float)), 0);
  ASSERT_EQ(weights_a.size(), weights_b.size());
  EXPECT_EQ(std::memcmp(weights_a.data(), weights_b.data(), weights_a.size() * sizeof(float)), 0)
      << "two identical CUDA training runs produced different weights";
}

// By default (ACCUM_CUDA_GRAPHS unset) the forward and the backward's segments (the head,
// each layer; writing or adding the gradients) run as recorded CUDA graphs (each captured at
// its second call) and train to the bits of ops launched one by one (ACCUM_CUDA_GRAPHS=0);
// the graphs were launched, not only the ops.
TEST(CudaTraining, CudaGraphsTrainToTheSameBits) {
  ACCUM_REQUIRE_CUDA();
  std::vector<float> eager_weights, graph_weights;
  std::vector<float> eager_losses, graph_losses;
  with_env("ACCUM_CUDA_GRAPHS", "0", [&] {
    Backends backends;
    eager_losses = train(*backends.gpu, 4, &eager_weights);
    EXPECT_EQ(backends.gpu->recorded_launches(), 0) << "graphs launched with ACCUM_CUDA_GRAPHS=0";
  });
  with_env("ACCUM_CUDA_GRAPHS", "", [&] {
    Backends backends;
    long launches_before_last = -1;
    graph_losses = train(*backends.gpu, 4, &graph_weights, [&](int step) {
      if (step == 4) launches_before_last = backends.gpu->recorded_launches();
    });
    // By the last window every record has settled (each ran once as ops, and again after
    // the first optimizer step grew a scratch buffer it uses): its 2 forwards and the
    // segments of its 2 backwards (the head and each layer) are all graph launches.
    EXPECT_EQ(backends.gpu->recorded_launches() - launches_before_last,
              2 + 2 * (tiny_config().n_layer + 1));
  });
  ASSERT_EQ(eager_losses.size(), graph_losses.size());
  EXPECT_EQ(std::memcmp(eager_losses.data(), graph_losses.data(), eager_losses.size() * 4), 0);
  ASSERT_EQ(eager_weights.size(), graph_weights.size());
  EXPECT_EQ(std::memcmp(eager_weights.data(), graph_weights.data(), eager_weights.size() * 4), 0)
      << "training with CUDA graphs changed the weights";
}

TEST(CudaTraining, CudaGraphsSwitchThatIsNotZeroOrOneIsRefused) {
  ACCUM_REQUIRE_CUDA();
  std::string error;
  with_env("ACCUM_CUDA_GRAPHS", "yes",
           [&] { error = thrown_message<std::exception>([] { Backends backends; }); });
  EXPECT_TRUE(error.find("ACCUM_CUDA_GRAPHS='yes': expected 1 (CUDA graphs) or 0") !=
              std::string::npos)
      << "error: " << error;
}

// Losses and weights after 4 steps with `side` as ACCUM_CUDA_SIDE_STREAM and `graphs` as
// ACCUM_CUDA_GRAPHS; the graph launches of the last step in *last_launches.
std::vector<float> train_with(const char* side, const char* graphs, std::vector<float>* weights,
                              long* last_launches) {
  std::vector<float> losses;
  with_env("ACCUM_CUDA_SIDE_STREAM", side, [&] {
    with_env("ACCUM_CUDA_GRAPHS", graphs, [&] {
      Backends backends;
      long before_last = -1;
      losses = train(*backends.gpu, 4, weights, [&](int step) {
        if (step == 4) before_last = backends.gpu->recorded_launches();
      });
      *last_launches = backends.gpu->recorded_launches() - before_last;
    });
  });
  return losses;
}

TEST(CudaTraining, SideStreamTrainsToTheSameBits) {
  ACCUM_REQUIRE_CUDA();
  std::vector<float> one_stream_weights;
  long launches = 0;
  const auto one_stream_losses = train_with("0", "1", &one_stream_weights, &launches);
  for (const auto& [side, graphs] :
       std::vector<std::pair<const char*, const char*>>{{"1", "1"}, {"1", "0"}, {"equal", "1"}}) {
    SCOPED_TRACE(std::string("ACCUM_CUDA_SIDE_STREAM=") + side + " ACCUM_CUDA_GRAPHS=" + graphs);
    std::vector<float> weights;
    long side_launches = 0;
    const auto losses = train_with(side, graphs, &weights, &side_launches);
    // With graphs, the segments with side work are still captured and launched as graphs
    // (the forks joined back before each capture ends).
    EXPECT_EQ(side_launches, std::string(graphs) == "1" ? launches : 0);
    ASSERT_EQ(losses.size(), one_stream_losses.size());
    EXPECT_EQ(std::memcmp(losses.data(), one_stream_losses.data(), losses.size() * 4), 0);
    ASSERT_EQ(weights.size(), one_stream_weights.size());
    size_t differing = 0;
    for (size_t i = 0; i < weights.size(); ++i) {
      differing += std::memcmp(&weights[i], &one_stream_weights[i], sizeof(float)) != 0;
    }
    EXPECT_EQ(differing, 0u) << differing << " of " << weights.size()
                             << " weights differ from the one-stream run: side work read or "
                                "wrote a buffer before its join (Gpt2::layer_backward)?";
  }
}

TEST(CudaTraining, SideStreamSwitchThatIsNotZeroOrOneIsRefused) {
  ACCUM_REQUIRE_CUDA();
  std::string error;
  with_env("ACCUM_CUDA_SIDE_STREAM", "on",
           [&] { error = thrown_message<std::exception>([] { Backends backends; }); });
  EXPECT_TRUE(error.find("ACCUM_CUDA_SIDE_STREAM='on': expected 1 (a second stream for side "
                         "work, below the main one's priority), equal") != std::string::npos)
      << "error: " << error;
}

// What side work may not do is refused by name, not left to race: nesting, a join for a
// ticket never handed out, a copy from the host (the staging buffers are the main stream's);
// and a recorded body that throws mid-capture leaves nothing behind to wait for.
TEST(CudaTraining, SideWorkMisuseIsRefused) {
  ACCUM_REQUIRE_CUDA();
  with_env("ACCUM_CUDA_SIDE_STREAM", "1", [&] {
    Backends backends;
    Backend& gpu = *backends.gpu;
    auto message = thrown_message<std::logic_error>;
    EXPECT_NE(message([&] {
                gpu.side_work([&] { gpu.side_work([] {}); });
              }).find("side_work: called inside side work"),
              std::string::npos);
    EXPECT_NE(message([&] { gpu.join_side_work(1000); }).find("ticket 1000 was never handed out"),
              std::string::npos);
    void* buffer = gpu.alloc(64);
    const std::vector<char> host(64, 1);
    EXPECT_NE(message([&] {
                gpu.side_work([&] { gpu.upload(buffer, host.data(), 64); });
              }).find("side work may not copy from the host"),
              std::string::npos);
    // A recorded body that throws after queuing side work, while it is being captured (its
    // second run): the capture is dropped, and nothing waits for its side work later (a GPU
    // refuses waits on events recorded in a capture).
    int runs = 0;
    auto body = [&] {
      gpu.side_work([&] { gpu.fill_zero(buffer, 64); });
      if (++runs == 2) throw std::runtime_error("thrown while capturing");
    };
    gpu.run_recorded(&runs, 0, body);
    EXPECT_EQ(thrown_message<std::runtime_error>([&] { gpu.run_recorded(&runs, 0, body); }),
              "thrown while capturing");
    std::vector<char> back(64, 7);
    gpu.download(back.data(), buffer, 64);  // joins first: nothing of the capture to wait for
    // The back end is still usable: a side fill, joined by the download.
    gpu.side_work([&] { gpu.fill_zero(buffer, 64); });
    gpu.download(back.data(), buffer, 64);
    EXPECT_EQ(std::count(back.begin(), back.end(), 0), 64);
    gpu.forget_recorded(&runs);
    gpu.release(buffer);
  });
}

// The gradient buffer after one window of `batches` micro-batches of B rows each.
std::vector<float> accumulated_gradient(Backend& backend, int B,
                                        const std::vector<std::vector<int32_t>>& batches) {
  bench::Gpt2Step model(backend, tiny_config(), B, kT, 99);
  model.begin_window();
  for (const auto& batch : batches) model.micro_step(batch, 1.f);
  return model.gradients();
}

TEST(CudaTraining, MicroBatchesAccumulateTheGradientOfTheWholeBatch) {
  ACCUM_REQUIRE_CUDA();
  Backends backends;
  // One token stream read as a batch of 2 kB rows, or as two micro-batches of kB rows
  // (micro_step reads B*T inputs and the B*T targets one token later).
  std::mt19937_64 rng(21);
  std::uniform_int_distribution<int32_t> token(0, 95);
  std::vector<int32_t> joined(2 * kB * kT + 1);
  for (auto& t : joined) t = token(rng);
  const std::vector<std::vector<int32_t>> split = {
      std::vector<int32_t>(joined.begin(), joined.begin() + kB * kT + 1),
      std::vector<int32_t>(joined.begin() + kB * kT, joined.end())};
  for (Backend* backend : {backends.cpu.get(), backends.gpu.get()}) {
    const auto accumulated = accumulated_gradient(*backend, kB, split);
    const auto whole = accumulated_gradient(*backend, 2 * kB, {joined});
    const double tolerance = backend == backends.cpu.get() ? kF32Tolerance : kBf16Tolerance;
    EXPECT_LE(rel_l2(accumulated, whole), tolerance) << backend->name();
    double norm = 0;
    for (float g : whole) norm += double(g) * g;
    EXPECT_GT(norm, 0.0) << "no gradient: bad test setup";
  }
}

TEST(CudaTraining, ResumeFromSavedStateIsBitIdentical) {
  ACCUM_REQUIRE_CUDA();
  Backends backends;
  const auto batches = tiny_batches();
  const float dloss = 1.f / (2.f * kB * kT);
  auto run_steps = [&](bench::Gpt2Step& model, int first, int last, std::vector<float>* losses) {
    for (int step = first; step <= last; ++step) {
      model.begin_window();
      for (const auto& batch : batches) {
        model.micro_step(batch, dloss);
        losses->push_back(model.take_mean_loss());
      }
      model.optimizer_step(step, 3e-3f);
    }
  };
  std::vector<float> straight_losses, resumed_losses, ignored;
  bench::Gpt2Step straight(*backends.gpu, tiny_config(), kB, kT, 99);
  run_steps(straight, 1, 4, &straight_losses);

  bench::Gpt2Step::State saved;
  {
    bench::Gpt2Step first(*backends.gpu, tiny_config(), kB, kT, 99);
    run_steps(first, 1, 2, &ignored);
    saved = first.save();
  }
  bench::Gpt2Step resumed(*backends.gpu, tiny_config(), kB, kT, 12345);  // other init
  resumed.restore(saved);
  run_steps(resumed, 3, 4, &resumed_losses);

  const std::vector<float> want(straight_losses.begin() + 4, straight_losses.end());
  ASSERT_EQ(want.size(), resumed_losses.size());
  EXPECT_EQ(std::memcmp(want.data(), resumed_losses.data(), want.size() * sizeof(float)), 0)
      << "losses of steps 3-4 differ after resuming";
  const auto a = straight.master_weights(), b = resumed.master_weights();
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0)
      << "weights after step 4 differ after resuming";
}

}  // namespace
}  // namespace accum::kernels::gpu_testing
