// train/memory_plan.h — the memory arithmetic of shared/gradient-accumulation-note.txt
// for one spec: parameters, gradients, Adam state and the activations of ONE
// micro-batch (they do not grow with K), printed at start next to what the device
// reports, and the advice given when a micro-batch does not fit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "daemon/spec/spec.h"
#include "kernels/backend.h"

namespace accum::train {

struct MemoryPlan {
  size_t params = 0;       // fp32 master weights
  size_t working = 0;      // low-precision working copy (0 on fp32 back ends)
  size_t grads = 0;        // fp32 gradient accumulation buffer
  size_t optimizer = 0;    // fp32 Adam moments of the owned parameters
  size_t activations = 0;  // one micro-batch, including backward scratch
  size_t total() const { return params + working + grads + optimizer + activations; }
};

MemoryPlan plan_memory(const kernels::Backend& backend, const spec::ModelConfig& config, int B,
                       int T, size_t owned_params);
// "3.21 GB", or "12.5 MB" below a gigabyte so small amounts do not read as zero.
std::string human_bytes(size_t bytes);
// "params 0.50 GB + grads 0.50 GB + Adam 1.00 GB + activations/micro-batch 2.1 GB = 4.1 GB"
std::string describe(const MemoryPlan& plan);
// Memory the job may use, asked before the model is allocated: what the device has free
// (CUDA: the context, the cuBLASLt workspace, the communicator and other processes already
// taken out) or MemAvailable (CPU).
std::optional<size_t> memory_budget(const kernels::Backend& backend);
// All the memory the device has, used or not (CUDA: cudaMemGetInfo's total; CPU:
// MemTotal): a plan above it fits no run of the spec on this device.
std::optional<size_t> memory_capacity(const kernels::Backend& backend);
// When a micro-batch does not fit `budget`: the largest micro_batch_size up to `most` that
// fits and the grad_accum_steps that keeps tokens_per_update (or why none does). `most` is
// the spec's B when the arithmetic said it does not fit, B - 1 when the arithmetic said it
// does and an allocation failed all the same.
std::string out_of_memory_advice(const kernels::Backend& backend, const spec::ModelConfig& config,
                                 int most, int T, int world, int64_t tokens_per_update,
                                 size_t owned_params, size_t budget);

}  // namespace accum::train
