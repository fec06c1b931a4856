#include "daemon/worker/train/memory_plan.h"

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "daemon/worker/model/gpt2.h"

namespace accum::train {
std::string human_bytes(size_t bytes) {
  if (bytes >= 1000000000) return absl::StrFormat("%.2f GB", bytes / 1e9);
  return absl::StrFormat("%.1f MB", bytes / 1e6);
}

MemoryPlan plan_memory(const kernels::Backend& backend, const spec::ModelConfig& config, int B,
                       int T, size_t owned_params) {
  const size_t n = static_cast<size_t>(spec::parameter_count(config));
  MemoryPlan plan;
  plan.params = n * sizeof(float);
  plan.working = model::gpt2_working_elements(backend, config) * backend.act_bytes();
  plan.grads = n * sizeof(float);
  plan.optimizer = 2 * owned_params * sizeof(float);
  plan.activations = model::gpt2_activation_bytes(backend, config, B, T);
  return plan;
}

std::string describe(const MemoryPlan& plan) {
  std::string out = absl::StrCat("params ", human_bytes(plan.params));
  if (plan.working) absl::StrAppend(&out, " + working copy ", human_bytes(plan.working));
  absl::StrAppend(&out, " + grads ", human_bytes(plan.grads), " + Adam ",
                  human_bytes(plan.optimizer), " + activations/micro-batch ",
                  human_bytes(plan.activations), " = ", human_bytes(plan.total()));
  return out;
}

namespace {

// A /proc/meminfo line's value in bytes ("MemAvailable:", "MemTotal:").
std::optional<size_t> meminfo_bytes(const std::string& wanted) {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  size_t kilobytes = 0;
  std::string unit;
  while (meminfo >> key >> kilobytes >> unit) {
    if (key == wanted) return kilobytes * 1024;
  }
  return std::nullopt;
}

}  // namespace

std::optional<size_t> memory_budget(const kernels::Backend& backend) {
  size_t used = 0, total = 0;
  if (backend.memory_info(&used, &total)) return total - used;
  return meminfo_bytes("MemAvailable:");
}

std::optional<size_t> memory_capacity(const kernels::Backend& backend) {
  size_t used = 0, total = 0;
  if (backend.memory_info(&used, &total)) return total;
  return meminfo_bytes("MemTotal:");
}

std::string out_of_memory_advice(const kernels::Backend& backend, const spec::ModelConfig& config,
                                 int most, int T, int world, int64_t tokens_per_update,
                                 size_t owned_params, size_t budget) {
  // Activations are linear in B; the rest does not depend on it.
  const MemoryPlan one = plan_memory(backend, config, 1, T, owned_params);
  const size_t fixed = one.total() - one.activations;
  const char* const smaller = "; use ZeRO-1, more ranks or a smaller model";
  if (fixed + one.activations > budget) {
    return absl::StrCat("even micro_batch_size 1 needs ", human_bytes(fixed + one.activations),
                        " of ", human_bytes(budget), smaller);
  }
  if (most < 1) return absl::StrCat("micro_batch_size 1 does not fit either", smaller);
  const int largest =
      static_cast<int>(std::min<size_t>((budget - fixed) / one.activations, size_t(most)));
  // The largest micro-batch that fits and still divides the global batch exactly.
  for (int b = largest; b >= 1; --b) {
    const int64_t window = int64_t{b} * T * world;
    if (tokens_per_update % window == 0) {
      return absl::StrCat("the largest micro_batch_size that fits is ", largest,
                          "; micro_batch_size ", b, " with grad_accum_steps ",
                          tokens_per_update / window, " keeps tokens_per_update ",
                          tokens_per_update);
    }
  }
  return absl::StrCat("the largest micro_batch_size that fits is ", largest);
}

}  // namespace accum::train
