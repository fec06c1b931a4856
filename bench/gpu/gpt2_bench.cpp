// bench/gpu/gpt2_bench.cpp — training throughput of the CUDA back end on GPT-2 (default
// 124M, T=1024, bf16 activations, fp32 master/grads/Adam), for bench/gpu.sh.
//
//   gpt2_bench [--batch B] [--seq T] [--grad-accum K] [--steps S] [--warmup W]
//              [--layers L --heads H --dmodel C --vocab V] [--device-mib M] [--out FILE]
//              [--k-scaling K1,K2,... [--rounds R]]
//
// --device-mib M makes a larger card behave like one with M MiB of device memory (e.g.
// 81559 for an H100 80GB on an H200): the difference is allocated up front and held.
// --k-scaling K1,K2,... measures the K-scaling goal in one process so that clock drift
// cannot pass for overhead: each round runs, for every K, max(K)/K optimizer steps (the
// same number of micro-steps, so every block loads the card equally long), blocks
// alternating, R timed rounds after one untimed; it prints per K the mean step, micro-step
// and optimizer times, and the micro-steps split by CUDA events into the window's first
// (it writes the fp32 gradients) and the mean of the others (they add to them), and the
// card's mean SM clock in each K's blocks (clock_sampler.h) ("mode":"k_scaling").
//
// One optimizer step = K micro-batches (forward + backward into the fp32 grads: the first
// writes them, the others add), global-norm clip, AdamW. The first W steps are not timed.
// Tokens are a fixed synthetic stream (uniform ids, fixed seed) cycled over 4 micro-batches:
// uniform ids cannot be predicted, but a micro-batch seen again must have a lower loss than
// the first time (it was trained on), so when a run revisits one, a loss that did not fall
// is reported as a wrong training step. Prints one JSON object (also written to --out) with
// tokens_per_s, step_ms (split into micro_ms per micro-step and optimizer_ms for clip +
// AdamW), flops_per_token, peak_tflops (the card's, kernels/cuda/device_peak.h), memory and
// "learned" (true / false / null when no micro-batch was seen twice). Exit status: 0 ok, 2 bad
// flags, 3 no GPU, 4 did not learn, 5 out of device memory (the micro-batch does not fit:
// bench/gpu.sh then tries a smaller one), 1 any other error.
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>
#include <unistd.h>  // environ

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <new>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench/gpu/clock_sampler.h"
#include "bench/gpu/gpt2_step.h"
#include "kernels/backend.h"
#include "kernels/cuda/device_peak.h"

namespace {

// The back end's switches set in this process's environment (ACCUM_ATTENTION*,
// ACCUM_CUBLASLT_*, ACCUM_LAYERNORM_*, ACCUM_CUDA_GRAPHS), as a JSON object, so that every
// result says which kernels produced it.
std::string backend_switches_json() {
  static const char* const kPrefixes[] = {"ACCUM_ATTENTION", "ACCUM_CUBLASLT_", "ACCUM_LAYERNORM_",
                                          "ACCUM_CUDA_GRAPHS"};
  std::vector<std::string> entries;
  for (char** variable = environ; *variable != nullptr; ++variable) {
    const std::string entry = *variable;
    const size_t equals = entry.find('=');
    if (equals == std::string::npos) continue;
    const std::string name = entry.substr(0, equals), value = entry.substr(equals + 1);
    bool ours = false;
    for (const char* prefix : kPrefixes) ours = ours || name.rfind(prefix, 0) == 0;
    if (!ours || value.find_first_of("\"\\") != std::string::npos) continue;
    entries.push_back("\"" + name + "\":\"" + value + "\"");
  }
  std::sort(entries.begin(), entries.end());
  std::string json = "{";
  for (size_t i = 0; i < entries.size(); ++i) json += (i ? "," : "") + entries[i];
  return json + "}";
}

struct Args {
  int batch = 8, seq = 1024, grad_accum = 1, steps = 20, warmup = 5;
  long device_mib = 0;         // 0: the whole card
  std::vector<int> k_scaling;  // empty: the plain benchmark
  int rounds = 3;
  accum::bench::Gpt2Config model;
  std::string out;
};

Args parse(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) {
      std::cerr << "gpt2_bench: " << flag << " needs a value\n";
      std::exit(2);
    }
    const char* value = argv[++i];
    if (flag == "--batch")
      args.batch = std::atoi(value);
    else if (flag == "--seq")
      args.seq = std::atoi(value);
    else if (flag == "--grad-accum")
      args.grad_accum = std::atoi(value);
    else if (flag == "--steps")
      args.steps = std::atoi(value);
    else if (flag == "--warmup")
      args.warmup = std::atoi(value);
    else if (flag == "--layers")
      args.model.n_layer = std::atoi(value);
    else if (flag == "--heads")
      args.model.n_head = std::atoi(value);
    else if (flag == "--dmodel")
      args.model.d_model = std::atoi(value);
    else if (flag == "--vocab")
      args.model.vocab = std::atoi(value);
    else if (flag == "--k-scaling") {
      std::stringstream list(value);
      for (std::string item; std::getline(list, item, ',');)
        args.k_scaling.push_back(std::atoi(item.c_str()));
    } else if (flag == "--rounds")
      args.rounds = std::atoi(value);
    else if (flag == "--device-mib")
      args.device_mib = std::atol(value);
    else if (flag == "--out")
      args.out = value;
    else {
      std::cerr << "gpt2_bench: unknown flag " << flag << "\n";
      std::exit(2);
    }
  }
  args.model.max_seq = std::max(args.model.max_seq, args.seq);
  if (args.batch <= 0 || args.seq <= 0 || args.grad_accum <= 0 || args.steps <= 0 ||
      args.warmup < 0 || args.device_mib < 0 || args.rounds <= 0 ||
      std::any_of(args.k_scaling.begin(), args.k_scaling.end(), [](int k) { return k <= 0; })) {
    std::cerr << "gpt2_bench: batch, seq, grad-accum, steps, rounds and every --k-scaling K "
                 "must be positive\n";
    std::exit(2);
  }
  return args;
}

size_t device_used_bytes() {
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) return 0;
  return total_bytes - free_bytes;
}

struct StepTimes {
  double micro = 0, optimizer = 0;  // seconds
  // The micro-steps split by CUDA events on the stream (no extra host wait): the window's
  // first, which writes the fp32 gradients, and the K-1 others together, which add to them.
  double first_micro = 0, adding_micros = 0;  // seconds
  double norm = 0;
  float loss = 0;  // mean over the step's micro-batches
};

// --k-scaling: blocks of max(K)/K steps per K, alternating, `rounds` timed rounds after
// one untimed round; one JSON line with the mean times per K.
template <typename TimedStep>
int run_k_scaling(const Args& args, const cudaDeviceProp& prop, TimedStep& timed_step) {
  const int max_k = *std::max_element(args.k_scaling.begin(), args.k_scaling.end());
  const size_t n = args.k_scaling.size();
  std::vector<double> micro(n, 0.0), optimizer(n, 0.0), first(n, 0.0), adding(n, 0.0);
  std::vector<int> steps(n, 0);
  accum::bench::ClockSampler clocks(0, n);  // the timed blocks' SM clock, per K
  int step = 0;
  for (int round = 0; round <= args.rounds; ++round) {
    for (size_t i = 0; i < n; ++i) {
      const int K = args.k_scaling[i];
      const int block = (max_k + K - 1) / K;
      if (round > 0) clocks.begin_block(i);
      for (int s = 0; s < block; ++s) {
        const StepTimes times = timed_step(++step, K);
        if (round == 0) continue;  // untimed: warm-up of every K
        micro[i] += times.micro;
        optimizer[i] += times.optimizer;
        first[i] += times.first_micro;
        adding[i] += times.adding_micros;
        ++steps[i];
      }
      clocks.end_block();
      std::cerr << "round " << round << (round == 0 ? " (untimed)" : "") << " K=" << K << "\n";
    }
  }
  std::ostringstream json;
  json << "{\"impl\":\"accum-cuda\",\"mode\":\"k_scaling\",\"device\":\"" << prop.name
       << "\",\"batch\":" << args.batch << ",\"seq\":" << args.seq << ",\"rounds\":" << args.rounds
       << ",\"results\":[";
  for (size_t i = 0; i < n; ++i) {
    const double micro_ms = micro[i] / steps[i] / args.k_scaling[i] * 1e3;
    const double optimizer_ms = optimizer[i] / steps[i] * 1e3;
    json << (i ? "," : "") << "{\"grad_accum\":" << args.k_scaling[i] << ",\"steps\":" << steps[i]
         << ",\"step_ms\":" << (micro[i] + optimizer[i]) / steps[i] * 1e3
         << ",\"micro_ms\":" << micro_ms << ",\"optimizer_ms\":" << optimizer_ms
         << ",\"first_micro_ms\":" << first[i] / steps[i] * 1e3;
    // Mean adding micro-step; null at K = 1, which has none.
    if (args.k_scaling[i] > 1) {
      json << ",\"adding_micro_ms\":" << adding[i] / steps[i] / (args.k_scaling[i] - 1) * 1e3;
    } else {
      json << ",\"adding_micro_ms\":null";
    }
    // The card's mean SM clock over the K's timed blocks and the share of samples at its
    // power cap; null without NVML.
    const accum::bench::ClockSampler::Block c = clocks.block(i);
    if (c.samples > 0) {
      json << ",\"sm_mhz\":" << c.mean_sm_mhz << ",\"power_capped\":" << c.power_capped_share;
    } else {
      json << ",\"sm_mhz\":null,\"power_capped\":null";
    }
    json << "}";
  }
  json << "]}";
  std::cout << json.str() << std::endl;
  if (!args.out.empty()) std::ofstream(args.out) << json.str() << "\n";
  return 0;
}

int run(const Args& args) {
  std::string why;
  if (!accum::kernels::backend_available(accum::kernels::DeviceKind::kCuda, &why)) {
    std::cerr << "gpt2_bench: " << why << "\n";
    return 3;
  }
  auto backend = accum::kernels::make_backend(accum::kernels::DeviceKind::kCuda, 0);
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  // Emulate a smaller card: hold the memory beyond --device-mib for the whole run.
  void* ballast = nullptr;
  size_t free_bytes = 0, total_bytes = 0;
  cudaMemGetInfo(&free_bytes, &total_bytes);
  if (args.device_mib > 0) {
    const size_t cap = size_t(args.device_mib) << 20;
    if (total_bytes > cap && cudaMalloc(&ballast, total_bytes - cap) != cudaSuccess) {
      std::cerr << "gpt2_bench: could not hold " << ((total_bytes - cap) >> 20)
                << " MiB to emulate a " << args.device_mib << " MiB card\n";
      return 1;
    }
  }
  const size_t used_before = device_used_bytes();
  accum::bench::Gpt2Step model(*backend, args.model, args.batch, args.seq, 1234);

  const size_t tokens_per_micro = size_t(args.batch) * args.seq;
  std::vector<std::vector<int32_t>> batches(4, std::vector<int32_t>(tokens_per_micro + 1));
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<int32_t> token(0, std::min(args.model.vocab, 50257) - 1);
  for (auto& batch : batches) {
    for (auto& t : batch) t = token(rng);
  }

  int micro = 0;  // micro-batches run so far: picks the next one of the 4
  // Loss of the steps that start at micro-batch 0 (with K = 1: micro-batch 0 itself), the
  // first and the last time.
  float batch0_first = NAN, batch0_last = NAN;
  int batch0_visits = 0;
  // Events around the window's first micro-step split it from the adding ones (they live
  // as long as the process).
  auto stream = static_cast<cudaStream_t>(backend->compute_stream());
  cudaEvent_t window_start, first_done, window_done;
  for (cudaEvent_t* e : {&window_start, &first_done, &window_done}) cudaEventCreate(e);
  auto event_seconds = [](cudaEvent_t from, cudaEvent_t to) {
    float ms = 0;
    cudaEventElapsedTime(&ms, from, to);
    return ms / 1e3;
  };
  // One optimizer step of K micro-batches; the phases are timed apart (synchronized):
  // K micro-steps, then clip + AdamW.
  auto timed_step = [&](int step, int K) {
    const float dloss = 1.f / (float(tokens_per_micro) * K);  // mean over the window
    StepTimes times;
    backend->synchronize();
    const auto start = std::chrono::steady_clock::now();
    model.begin_window();
    const bool batch0 = micro % 4 == 0;
    cudaEventRecord(window_start, stream);
    for (int k = 0; k < K; ++k) {
      model.micro_step(batches[micro++ % 4], dloss);
      if (k == 0) cudaEventRecord(first_done, stream);
    }
    cudaEventRecord(window_done, stream);
    backend->synchronize();
    const auto micro_done = std::chrono::steady_clock::now();
    times.first_micro = event_seconds(window_start, first_done);
    times.adding_micros = event_seconds(first_done, window_done);
    times.loss = model.take_mean_loss();  // after the clock: the worker reads it once per step
    if (batch0) (batch0_visits++ == 0 ? batch0_first : batch0_last) = times.loss;
    times.norm = model.optimizer_step(step, 3e-4f);
    backend->synchronize();
    const auto done = std::chrono::steady_clock::now();
    times.micro = std::chrono::duration<double>(micro_done - start).count();
    times.optimizer = std::chrono::duration<double>(done - micro_done).count();
    return times;
  };
  if (!args.k_scaling.empty()) return run_k_scaling(args, prop, timed_step);

  float first_loss = NAN, last_loss = NAN;
  double timed_seconds = 0, timed_micro_seconds = 0, timed_optimizer_seconds = 0;
  for (int step = 1; step <= args.warmup + args.steps; ++step) {
    // The timed steps are the profiler's capture range (nsys --capture-range=cudaProfilerApi,
    // bench/gpu/gpu_gaps.py); outside a profiler these calls do nothing.
    if (step == args.warmup + 1) cudaProfilerStart();
    const StepTimes times = timed_step(step, args.grad_accum);
    if (step == args.warmup + args.steps) cudaProfilerStop();
    const double seconds = times.micro + times.optimizer;
    if (step > args.warmup) {
      timed_seconds += seconds;
      timed_micro_seconds += times.micro;
      timed_optimizer_seconds += times.optimizer;
    }
    const float loss = times.loss;
    if (step == 1) first_loss = loss;
    last_loss = loss;
    std::cerr << "step " << step << (step <= args.warmup ? " (warmup)" : "") << " loss " << loss
              << " grad_norm " << times.norm << " " << seconds * 1e3 << " ms\n";
  }
  const size_t used_after = device_used_bytes();
  const double step_ms = timed_seconds / args.steps * 1e3;
  const double micro_ms = timed_micro_seconds / args.steps / args.grad_accum * 1e3;
  const double optimizer_ms = timed_optimizer_seconds / args.steps * 1e3;
  const double tokens_per_s = double(tokens_per_micro) * args.grad_accum / (step_ms / 1e3);
  const auto& m = args.model;
  // The trainer's count (the PaLM / llm.c convention); the PyTorch side uses the same.
  const double flops_per_token =
      accum::model::flops_per_token(model.num_parameters(), m.n_layer, m.d_model, args.seq);
  const bool checked = batch0_visits >= 2;
  const bool learned = checked && batch0_last < batch0_first;

  std::ostringstream json;
  json << "{\"impl\":\"accum-cuda\",\"device\":\"" << prop.name << "\",\"n_layer\":" << m.n_layer
       << ",\"n_head\":" << m.n_head << ",\"d_model\":" << m.d_model << ",\"vocab\":" << m.vocab
       << ",\"batch\":" << args.batch << ",\"seq\":" << args.seq
       << ",\"grad_accum\":" << args.grad_accum
       << ",\"device_mib\":" << (args.device_mib > 0 ? args.device_mib : long(total_bytes >> 20))
       << ",\"params\":" << model.num_parameters() << ",\"steps\":" << args.steps
       << ",\"step_ms\":" << step_ms << ",\"micro_ms\":" << micro_ms
       << ",\"optimizer_ms\":" << optimizer_ms << ",\"tokens_per_s\":" << tokens_per_s
       << ",\"flops_per_token\":" << flops_per_token
       << ",\"peak_tflops\":" << accum::kernels::cuda::peak_tflops_for(prop.name)
       << ",\"first_loss\":" << first_loss << ",\"last_loss\":" << last_loss
       << ",\"learned\":" << (checked ? (learned ? "true" : "false") : "null")
       << ",\"model_bytes_allocated\":" << model.allocated_bytes()
       << ",\"device_bytes_used\":" << (used_after - used_before)
       << ",\"switches\":" << backend_switches_json()
       << ",\"recorded_launches\":" << backend->recorded_launches() << "}";
  std::cout << json.str() << std::endl;
  if (!args.out.empty()) {
    std::ofstream out(args.out);
    out << json.str() << "\n";
  }
  if (ballast != nullptr) cudaFree(ballast);
  if (checked && !learned) {
    std::cerr << "gpt2_bench: the loss of a micro-batch seen " << batch0_visits
              << " times did not fall (" << batch0_first << " -> " << batch0_last
              << "): the training step is wrong\n";
    return 4;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  try {
    return run(args);
  } catch (const std::bad_alloc&) {
  } catch (const std::exception& e) {
    if (std::string(e.what()).find("out of memory") == std::string::npos) {
      std::cerr << "gpt2_bench: " << e.what() << "\n";
      return 1;
    }
  }
  std::cerr << "gpt2_bench: out of device memory at micro-batch " << args.batch << "\n";
  return 5;
}
