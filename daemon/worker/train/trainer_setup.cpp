// train/trainer_setup.cpp — Trainer::setup(): everything a run needs before its first step,
// checked in the order that fails soonest and cheapest (the checkpoint folder, the back end,
// the memory arithmetic, the data), then the model, the gradient reducer and AdamW.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/spec/spec.h"
#include "daemon/worker/io/checkpoint_dir.h"
#include "daemon/worker/train/trainer_internal.h"

namespace accum::train {

absl::Status Trainer::setup() {
  // Found now, not at the first checkpoint after hours of training (as metrics_path is).
  if (auto s = io::ensure_checkpoint_root(spec_.checkpoint().dir()); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint.dir ", spec_.checkpoint().dir(), " cannot hold checkpoints: ", s.message(),
        "; expected a directory this worker can create and write into"));
  }
  // Rank 0 commits every checkpoint, so its lock keeps a second run out of the folder.
  if (is_rank0()) {
    auto lock = io::CheckpointDirLock::acquire(spec_.checkpoint().dir());
    if (lock.ok()) {
      dir_lock_ = std::move(*lock);
    } else if (absl::IsUnimplemented(lock.status())) {
      spdlog::warn("{}", std::string(lock.status().message()));
    } else {
      return lock.status();
    }
  }
  world_ = comm_->world_size();
  B_ = spec_.batch().micro_batch_size();
  T_ = spec_.batch().seq_len();
  const auto device =
      spec_.device() == accum::v1::CUDA ? kernels::DeviceKind::kCuda : kernels::DeviceKind::kCpu;
  kernels::BackendOptions backend_options;
  if (spec_.cuda().keep_cublaslt_algorithms()) {
    // Beside the checkpoints, so that restarts and resumes from them reuse the choices. The
    // folder must exist before the first GEMM keeps its choice there.
    const std::string& dir = spec_.checkpoint().dir();
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) {
      return absl::FailedPreconditionError(
          absl::StrCat("cuda.keep_cublaslt_algorithms: cannot create checkpoint.dir ", dir,
                       " to keep the algorithm choices in: ", ec.message()));
    }
    backend_options.cublaslt_algorithms_dir = dir;
    backend_options.cublaslt_algorithms_source = "cuda.keep_cublaslt_algorithms";
  }
  try {
    backend_ = kernels::make_backend(device, comm_->local_rank(), backend_options);
    comm_->set_compute_stream(backend_->compute_stream());  // NCCL waits for the backward
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        "out of memory creating the back end (the CUDA back end holds a 32 MiB cuBLASLt "
        "workspace, two with ACCUM_CUDA_SIDE_STREAM=1): the device is full before the model; "
        "free it or use another device");
  } catch (const std::exception& e) {
    return absl::FailedPreconditionError(e.what());
  }
  if (spec_.cuda().keep_cublaslt_algorithms() && is_rank0()) {
    // The file the back end chose: this machine's in checkpoint.dir, or ACCUM_CUBLASLT_ALGOS's.
    spdlog::info("cuBLASLt algorithms: kept in {}", backend_->kept_algorithms_file());
  }
  // The note's memory arithmetic, checked before allocating anything large.
  const auto config = spec::model_config(spec_);
  const size_t n = static_cast<size_t>(spec::parameter_count(config));
  const bool sharded = spec_.distributed().zero_stage() > 0 && world_ > 1;
  owned_estimate_ = sharded ? (n + world_ - 1) / world_ : n;
  plan_ = plan_memory(*backend_, config, B_, T_, owned_estimate_);
  budget_ = memory_budget(*backend_);
  if (size_t used = 0, total = 0; backend_->memory_info(&used, &total)) device_used_before_ = used;
  spec_tokens_per_update_ = spec_.batch().tokens_per_update() > 0
                                ? spec_.batch().tokens_per_update()
                                : int64_t{spec_.batch().grad_accum_steps()} * B_ * T_ * world_;
  if (budget_ && plan_.total() > *budget_) {
    const bool gpu = backend_->kind() == kernels::DeviceKind::kCuda;
    const absl::Status refused =
        out_of_memory(absl::StrCat("out of memory: ", gpu ? "the GPU has " : "the host has ",
                                   human_bytes(*budget_), gpu ? " free" : " available"),
                      false);
    // More than the device holds in all: no rerun fits it, so it is bad input (exit 2), not
    // a runtime failure for accumd to restart. Within the total, other processes hold the
    // difference, and a restart may find it free.
    const std::optional<size_t> capacity = memory_capacity(*backend_);
    if (capacity && plan_.total() > *capacity) {
      return absl::InvalidArgumentError(absl::StrCat(
          refused.message(), " (the arithmetic needs more than the ", human_bytes(*capacity),
          " the ", gpu ? "GPU" : "host", " has in all: this spec never fits it)"));
    }
    return refused;
  }
  // data.train, and data.val if given: each named in its errors, each at least one micro-batch.
  const auto open_tokens = [&](const char* field,
                               const google::protobuf::RepeatedPtrField<std::string>& paths,
                               std::unique_ptr<data::TokenStream>* stream) -> absl::Status {
    auto opened = data::TokenStream::open({paths.begin(), paths.end()}, spec_.data().format(),
                                          spec_.model().vocab_size(), spec_.data().use_mask());
    if (!opened.ok()) {
      return absl::Status(opened.status().code(),
                          absl::StrCat(field, ": ", opened.status().message()));
    }
    if ((*opened)->chunk_count(int64_t{B_} * T_) < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, " has ", (*opened)->size(),
                       " tokens; a micro-batch needs at least B*T+1 = ", int64_t{B_} * T_ + 1));
    }
    *stream = std::move(*opened);
    return absl::OkStatus();
  };
  if (auto s = open_tokens("data.train", spec_.data().train(), &train_data_); !s.ok()) return s;
  if (spec_.data().val_size() > 0) {
    if (auto s = open_tokens("data.val", spec_.data().val(), &val_data_); !s.ok()) return s;
  }
  // Allocations the arithmetic does not see (the allocator's rounding, scratch that grows
  // in the first micro-step) can still fail: run() turns std::bad_alloc into the same advice.
  model_ = std::make_unique<model::Gpt2>(backend_.get(), config, B_, T_);
  model_flops_per_token_ =
      model::flops_per_token(model_->num_params(), config.n_layer, config.d_model, T_);
  peak_tflops_ = backend_->peak_tflops();
  comm::GradReducerOptions options;
  options.bucket_bytes = static_cast<size_t>(spec_.distributed().bucket_mb() * (1 << 20));
  options.zero_stage = spec_.distributed().zero_stage();
  options.overlap = !spec_.distributed().no_overlap();
  reducer_ =
      std::make_unique<comm::GradReducer>(comm_, model_->grads(), model_->num_params(), options);
  std::vector<comm::Range> owned;
  for (auto [begin, end] : reducer_->owned_ranges()) {
    end = std::min(end, model_->num_params());
    if (begin < end) owned.emplace_back(begin, end);
  }
  optimizer_ = std::make_unique<AdamW>(backend_.get(), model_->tensors(), owned);
  return absl::OkStatus();
}

absl::Status Trainer::out_of_memory(const std::string& what, bool arithmetic_fit) const {
  const size_t budget = budget_.value_or(plan_.total());
  return absl::ResourceExhaustedError(absl::StrCat(
      what,
      arithmetic_fit ? absl::StrCat(" after the memory arithmetic fit in the ", human_bytes(budget),
                                    " reported free")
                     : "",
      ": needs ", describe(plan_), arithmetic_fit ? " and what the arithmetic does not see" : "",
      "; ",
      out_of_memory_advice(*backend_, spec::model_config(spec_), arithmetic_fit ? B_ - 1 : B_, T_,
                           world_, spec_tokens_per_update_, owned_estimate_, budget)));
}

}  // namespace accum::train
