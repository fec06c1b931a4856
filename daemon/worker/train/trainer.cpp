#include "daemon/worker/train/trainer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "daemon/spec/lr_schedule.h"
#include "daemon/spec/spec.h"
#include "daemon/worker/comm/grad_reducer.h"
#include "daemon/worker/data/token_stream.h"
#include "daemon/worker/exit_codes.h"
#include "daemon/worker/io/checkpoint_dir.h"
#include "daemon/worker/io/finite_values.h"
#include "daemon/worker/io/safetensors.h"
#include "daemon/worker/model/gpt2.h"
#include "daemon/worker/model/gpt2_hf.h"
#include "daemon/worker/train/checkpointing.h"
#include "daemon/worker/train/failure_agreement.h"
#include "daemon/worker/train/memory_plan.h"
#include "daemon/worker/train/metrics.h"
#include "daemon/worker/train/optimizer.h"
#include "daemon/worker/train/resume_point.h"
#include "daemon/worker/train/trainer_internal.h"
#include "kernels/backend.h"

namespace accum::train {
namespace {

std::atomic<bool> g_stop_requested{false};

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

StepAgreement exchange_scalars(comm::Communicator* comm, double loss_sum, double counted,
                               bool stop_local, const link::Command& command,
                               int64_t early_collectives) {
  // [loss, counted, stop votes, command kind (rank 0), request id (rank 0),
  //  collectives this rank issued before the last micro-step (the contract says 0)]
  double values[6] = {loss_sum, counted, stop_local ? 1.0 : 0.0,
                      0,        0,       static_cast<double>(early_collectives)};
  if (comm->rank() == 0) {
    values[3] = static_cast<double>(command.kind);
    values[4] = static_cast<double>(command.request_id);
  }
  comm->all_reduce(values, 6, {comm::ReduceOp::kSum, comm::DataType::kFloat64});
  StepAgreement agreement;
  agreement.loss_sum = values[0];
  agreement.counted = values[1];
  agreement.stop = values[2] > 0;
  agreement.command = static_cast<accum::v1::WorkerCommand::Kind>(static_cast<int>(values[3]));
  agreement.request_id = static_cast<uint64_t>(values[4]);
  agreement.collectives_before_last_micro_step = values[5];
  return agreement;
}

}  // namespace

absl::Status Trainer::restore_or_init() {
  auto resolved = resolve_resume_checkpoint(comm_, spec_.checkpoint());
  if (!resolved.ok()) return resolved.status();
  const std::string& resume_path = *resolved;
  auto accum_steps = spec::grad_accum_steps(spec_, world_);
  if (resume_path.empty()) {
    if (!accum_steps.ok()) return accum_steps.status();
    K_ = *accum_steps;
    tokens_per_update_ = int64_t{K_} * B_ * T_ * world_;
    if (!spec_.init_from().empty()) {
      auto weights = io::SafetensorsReader::open(
          spec_.init_from(), model::is_hf_gpt2_buffer, [&](const auto& shapes) {
            return model::place_hf_tensors(*model_, shapes, spec_.init_from()).status();
          });
      if (!weights.ok()) return weights.status();
      if (auto s = model::load_hf_weights(model_.get(), **weights, spec_.init_from()); !s.ok()) {
        return s;
      }
    } else {
      model_->init_random(spec_.seed());
    }
    return absl::OkStatus();
  }
  auto loaded = load_checkpoint(resume_path, spec_, model_.get(), optimizer_.get());
  if (!loaded.ok()) return loaded.status();
  const auto& state = loaded->state;
  // Elastic resume: the effective batch (tokens_per_update) is the checkpoint's; K follows N.
  // A spec asking for another one is refused, not ignored: the data position and the
  // schedule of the steps done assume the checkpoint's.
  tokens_per_update_ = state.tokens_per_update();
  const int64_t per_window = int64_t{B_} * T_ * world_;
  const auto& batch = spec_.batch();
  if (spec_tokens_per_update_ != tokens_per_update_) {
    const std::string asked =
        batch.tokens_per_update() > 0
            ? absl::StrCat("batch.tokens_per_update ", spec_tokens_per_update_)
            : absl::StrCat("batch.grad_accum_steps ", batch.grad_accum_steps(), " on ", world_,
                           " ranks, i.e. tokens_per_update ", spec_tokens_per_update_);
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot resume ", resume_path, ": it was trained with tokens_per_update ",
        tokens_per_update_, " and the spec asks for ", asked,
        "; a resumed run keeps the checkpoint's effective batch: set batch.tokens_per_update to ",
        tokens_per_update_, " (or start a new run without checkpoint.resume_from)"));
  }
  if (state.train_tokens() != 0 && state.train_tokens() != train_data_->size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot resume ", resume_path, ": data.train held ", state.train_tokens(),
        " tokens when it was written and holds ", train_data_->size(),
        " now; on other data the saved position (the next batch, the shuffle) picks other "
        "batches, so the run would not continue as it began. Restore data.train, or start "
        "a new run from the weights (init_from ",
        resume_path, "/model.safetensors)"));
  }
  if (tokens_per_update_ % per_window != 0) {
    accum::v1::JobSpec probe = spec_;
    probe.mutable_batch()->set_grad_accum_steps(0);
    probe.mutable_batch()->set_tokens_per_update(tokens_per_update_);
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot resume ", resume_path, " on ", world_, " ranks: tokens_per_update ",
        tokens_per_update_, " is not divisible by micro_batch_size*seq_len*world = ", per_window,
        "; rank counts that work: ", spec::valid_world_sizes(probe)));
  }
  K_ = static_cast<int>(tokens_per_update_ / per_window);
  start_step_ = state.step();
  if (spec_.max_steps() < start_step_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_steps ", spec_.max_steps(), " is below the checkpoint's step ", start_step_, " (",
        resume_path, "): nothing to train; expected max_steps >= ", start_step_));
  }
  updates_applied_ = state.has_updates_applied() ? state.updates_applied() : state.step();
  if (is_rank0()) {
    spdlog::info("resumed from {} at step {} (written by {} ranks x K={}; now {} ranks x K={})",
                 resume_path, start_step_, state.world_size(), state.grad_accum_steps(), world_,
                 K_);
  }
  last_checkpoint_ = resume_path;
  last_checkpoint_step_ = start_step_;
  return absl::OkStatus();
}

absl::Status Trainer::restore_and_open_metrics() {
  if (auto s = restore_or_init(); !s.ok()) return s;
  if (!is_rank0()) return absl::OkStatus();
  return metrics_.open(spec_.metrics_path(), start_step_, spec_.log_every_steps());
}

// Runs the K micro-batches of optimizer step `step`: gradients are summed into the
// fp32 buffer (the first backward writes it, so it is never zeroed) and reduced once,
// during the last backward. Returns this rank's (loss sum, counted targets).
std::pair<double, double> Trainer::accumulate_window(int64_t step) {
  comm_->set_step(step + 1);
  double counted = 0;
  window_comm_ = {};
  const int64_t first_chunk = step * int64_t{K_} * world_;
  for (int micro = 0; micro < K_; ++micro) {
    const int64_t chunk = first_chunk + int64_t{micro} * world_ + comm_->rank();
    train_data_->read_chunk(chunk, B_, T_, spec_.data().shuffle(), spec_.seed(), &batch_);
    model_->forward(batch_.inputs.data(), batch_.targets.data(), batch_.mask.data(),
                    /*for_backward=*/true);
    counted += static_cast<double>(batch_.counted);
    const kernels::GradMode mode = micro == 0 ? kernels::GradMode::kWrite : kernels::GradMode::kAdd;
    if (micro == K_ - 1) {
      // Only the last micro-batch communicates: buckets launch as the backward finishes them.
      reducer_->begin_window();
      model_->backward(mode, [this](size_t offset) { reducer_->mark_ready_from(offset); });
      reducer_->finish();
    } else {
      model_->backward(mode);
    }
    // The counters were reset at the step's start: whatever they hold now was issued
    // during micro-steps 0..micro. Recorded so the metrics can prove the contract.
    const comm::CommCounters& so_far = comm_->counters();
    if (window_comm_.first_gradient_collective_micro_step < 0 && so_far.gradient_collectives > 0) {
      window_comm_.first_gradient_collective_micro_step = micro;
    }
    if (micro == K_ - 2) window_comm_.collectives_before_last_micro_step = so_far.collectives;
    if (is_rank0()) link_->heartbeat(step, micro);
  }
  // The losses stayed on the device: one read per optimizer step, not per micro-step.
  return {model_->take_loss_sum(), counted};
}

std::optional<double> Trainer::evaluate() {
  if (!val_data_) return std::nullopt;
  double sums[2] = {0, 0};
  for (int i = 0; i < spec_.eval().batches(); ++i) {
    const int64_t chunk = int64_t{i} * world_ + comm_->rank();
    val_data_->read_chunk(chunk, B_, T_, /*shuffle=*/false, spec_.seed(), &batch_);
    model_->forward(batch_.inputs.data(), batch_.targets.data(), batch_.mask.data(),
                    /*for_backward=*/false);
    sums[1] += static_cast<double>(batch_.counted);
  }
  sums[0] = model_->take_loss_sum();
  comm_->all_reduce(sums, 2, {comm::ReduceOp::kSum, comm::DataType::kFloat64});
  if (sums[1] > 0) return sums[0] / sums[1];
  // A mean over no target is no loss: reported as 0 it would read as a perfect model.
  if (is_rank0()) {
    metrics_.message(absl::StrCat(
        "evaluation: every target of the ", spec_.eval().batches(), " x ", world_,
        " validation micro-batches is masked (0 counted tokens); no val_loss reported"));
  }
  return std::nullopt;
}

absl::StatusOr<std::string> Trainer::checkpoint(int64_t step, double last_loss) {
  accum::v1::CheckpointState state;
  state.set_format_version(kCheckpointFormatVersion);
  state.set_step(step);
  state.set_tokens_per_update(tokens_per_update_);
  state.set_world_size(world_);
  state.set_grad_accum_steps(K_);
  state.set_chunk_tokens(int64_t{B_} * T_);
  state.set_next_chunk(step * int64_t{K_} * world_);
  state.set_seed(spec_.seed());
  state.set_zero_stage(spec_.distributed().zero_stage());
  state.set_num_params(static_cast<int64_t>(model_->num_params()));
  *state.mutable_spec() = spec_;
  state.set_last_loss(last_loss);
  state.set_train_tokens(train_data_->size());
  state.set_updates_applied(updates_applied_);
  const std::string& root = spec_.checkpoint().dir();
  // On failure the message says what it cost (save_checkpoint()).
  return save_checkpoint(comm_, model_.get(), *optimizer_, state, root,
                         spec_.checkpoint().keep_last());
}

absl::Status Trainer::diverged(int64_t step, double loss, double grad_norm) const {
  const std::string go_back =
      last_checkpoint_.empty() ? std::string("no checkpoint was written before it")
                               : absl::StrCat("the last checkpoint, step ", last_checkpoint_step_,
                                              " (", last_checkpoint_, "), holds finite weights");
  return absl::InvalidArgumentError(
      absl::StrCat("step ", step, ": loss is ", io::value_name(loss), " and grad_norm is ",
                   io::value_name(grad_norm), ": training diverged; ", go_back, "; step ", step,
                   "'s update was not applied and no checkpoint follows it. A rerun diverges the "
                   "same way (training is bit-reproducible): lower optimizer.lr, "
                   "raise optimizer.eps or set optimizer.grad_clip, or check the data"));
}

absl::StatusOr<TrainResult> Trainer::run() {
  // Bad input found here (the data, the checkpoint to resume from, rank 0's checkpoint
  // folder lock or metrics file) is most often found by every rank alike: agreed on, it is
  // reported once and ends every rank with the same code, none left in a collective.
  if (auto s = agree_on_failure(comm_, setup()); !s.ok()) return s;
  if (auto s = agree_on_failure(comm_, restore_and_open_metrics()); !s.ok()) return s;
  if (is_rank0()) {
    const auto config = spec::model_config(spec_);
    metrics_.message(absl::StrFormat(
        "accum-worker: %s | %s back end | %d ranks x K=%d x B=%d x T=%d = %d tokens/update | "
        "%.2fM params | steps %d..%d",
        spec_.name(), backend_->name(), world_, K_, B_, T_, tokens_per_update_,
        spec::parameter_count(config) / 1e6, start_step_ + 1, spec_.max_steps()));
    // Next to the arithmetic, what the device says this worker took (cudaMemGetInfo: the
    // bytes in use now less those in use before the model, so the CUDA context, the back end's
    // workspace and other processes do not count), and what it says is in use in all. The
    // scratch that grows in the first micro-step is not allocated yet.
    size_t used = 0, total = 0;
    std::string measured;
    if (device_used_before_ && backend_->memory_info(&used, &total)) {
      const size_t taken = used > *device_used_before_ ? used - *device_used_before_ : 0;
      measured = absl::StrFormat(" | the device: %s taken by the model (%.2f of %.2f GB in use)",
                                 human_bytes(taken), used / 1e9, total / 1e9);
    }
    metrics_.message(absl::StrCat("memory: ", describe(plan_), measured));
    // Fewer micro-batches in data.train than one global batch reads: every step reads some
    // of them twice, so they weigh double in the gradient. Legal (a tiny smoke test), but
    // rarely what a user means.
    const int64_t chunks = train_data_->chunk_count(int64_t{B_} * T_);
    if (chunks < int64_t{K_} * world_) {
      metrics_.message(absl::StrCat(
          "warning: data.train holds ", chunks, " micro-batches of B*T = ", int64_t{B_} * T_,
          " tokens, and one optimizer step reads ", int64_t{K_} * world_, " (", world_,
          " ranks x K=", K_, "): every step reads some of them more than once"));
    }
    if (start_step_ == spec_.max_steps()) {
      metrics_.message(absl::StrCat("nothing to train: the checkpoint's step ", start_step_,
                                    " is max_steps; the job is complete"));
    }
    accum::v1::WorkerHello hello;
    hello.set_world_size(world_);
    hello.set_start_step(start_step_);
    link_->hello(hello);
  }
  TrainResult result;
  result.final_step = start_step_;
  const int64_t max_steps = spec_.max_steps();
  const int every = spec_.checkpoint().every_steps();
  for (int64_t step = start_step_; step < max_steps; ++step) {
    const auto started = Clock::now();
    comm_->counters() = {};
    const auto [window_loss, window_counted] = accumulate_window(step);
    const comm::CommCounters gradient_counters = comm_->counters();
    const link::Command command = is_rank0() ? link_->poll_command() : link::Command{};
    const StepAgreement agreed =
        exchange_scalars(comm_, window_loss, window_counted, g_stop_requested.load(), command,
                         window_comm_.collectives_before_last_micro_step);
    // ---- normalize, clip, update --------------------------------------------------------
    const double scale = agreed.counted > 0 ? 1.0 / agreed.counted : 0.0;
    double sum_squares = optimizer_->owned_sum_squares(model_->grads());
    if (spec_.distributed().zero_stage() > 0 && world_ > 1) {
      comm_->all_reduce(&sum_squares, 1, {comm::ReduceOp::kSum, comm::DataType::kFloat64});
    }
    const double grad_norm = std::sqrt(sum_squares) * scale;
    // The loss sum came through exchange_scalars and the norm is over the reduced gradient
    // (all-reduced itself under ZeRO-1): both are global, so every rank stops here alike.
    // Before the update, so the weights stay those of the step before, and no checkpoint
    // follows a step that is not finite.
    if (!std::isfinite(agreed.loss_sum) || !std::isfinite(sum_squares)) {
      return diverged(step + 1,
                      agreed.counted > 0 ? agreed.loss_sum / agreed.counted : agreed.loss_sum,
                      grad_norm);
    }
    double clip = 1.0;
    const double max_norm = spec_.optimizer().grad_clip();
    if (max_norm > 0 && grad_norm > max_norm) clip = max_norm / (grad_norm + 1e-6);
    const double lr = accum::spec::learning_rate(spec_.optimizer(), step, max_steps);
    kernels::AdamWParams params;
    params.lr = static_cast<float>(lr);
    params.beta1 = spec_.optimizer().beta1();
    params.beta2 = spec_.optimizer().beta2();
    params.eps = static_cast<float>(spec_.optimizer().eps());
    params.grad_scale = static_cast<float>(scale * clip);
    params.step = static_cast<int>(updates_applied_ + 1);  // bias correction: this update's
    const bool sharded = spec_.distributed().zero_stage() > 0 && world_ > 1;
    // No target counted in the whole global batch (all masked): there is no gradient, and
    // an AdamW step would still decay the weights and move the moments. Every rank sees
    // the same all-reduced count, so every rank skips alike.
    const bool skip_update = agreed.counted == 0;
    if (!skip_update) {
      optimizer_->step(model_->params(),
                       backend_->has_working_copy() && !sharded ? model_->working_copy() : nullptr,
                       model_->grads(), params,
                       static_cast<float>(spec_.optimizer().weight_decay()));
      ++updates_applied_;
      if (sharded) {
        reducer_->all_gather_params(model_->params());
        model_->sync_working_copy();
      }
    }
    backend_->synchronize();
    const comm::CommCounters step_counters = comm_->counters();
    const int64_t done = step + 1;
    result.final_step = done;
    result.final_loss = agreed.counted > 0 ? agreed.loss_sum / agreed.counted : 0.0;
    // ---- evaluate, report ----------------------------------------------------------------
    std::optional<double> val_loss;
    if (spec_.eval().every_steps() > 0 &&
        (done % spec_.eval().every_steps() == 0 || done == max_steps)) {
      val_loss = evaluate();
    }
    const double step_ms = ms_since(started);
    if (is_rank0()) {
      accum::v1::StepMetrics m;
      m.set_step(done);
      if (!skip_update) m.set_loss(result.final_loss);
      m.set_lr(lr);
      m.set_grad_norm(grad_norm);
      m.set_tokens(static_cast<int64_t>(agreed.counted));
      m.set_tokens_per_s(static_cast<double>(tokens_per_update_) / (step_ms / 1000.0));
      m.set_step_ms(step_ms);
      if (val_loss) m.set_val_loss(*val_loss);
      m.set_grad_accum_steps(K_);
      m.set_world_size(world_);
      m.set_collectives(gradient_counters.gradient_collectives);
      m.set_bytes_reduced(gradient_counters.bytes_reduced);
      m.set_comm_exposed_ms(gradient_counters.exposed_ms);
      m.set_max_steps(max_steps);
      m.set_model_tflops(m.tokens_per_s() / world_ * model_flops_per_token_ / 1e12);
      if (peak_tflops_ > 0) m.set_mfu(m.model_tflops() / peak_tflops_);
      StepCommDetail detail;
      detail.first_gradient_collective_micro_step =
          window_comm_.first_gradient_collective_micro_step;
      detail.collectives_before_last_micro_step =
          static_cast<int64_t>(agreed.collectives_before_last_micro_step);
      detail.param_collectives =
          step_counters.gradient_collectives - gradient_counters.gradient_collectives;
      detail.bytes_gathered = step_counters.bytes_gathered;
      detail.gather_exposed_ms = step_counters.exposed_ms - gradient_counters.exposed_ms;
      detail.step_collectives = step_counters.collectives;
      metrics_.write(m, &detail);
      link_->report_metrics(m);
      if (skip_update) {
        metrics_.message(absl::StrCat("step ", done,
                                      ": every target of the global batch is masked (0 counted "
                                      "tokens); the optimizer update was skipped"));
      }
    }
    // ---- checkpoint / stop at this boundary, on every rank alike ---------------------------
    const bool stop = agreed.stop || agreed.command == accum::v1::WorkerCommand::STOP;
    const bool requested = agreed.command == accum::v1::WorkerCommand::CHECKPOINT;
    const bool scheduled = every > 0 && done % every == 0;
    if (stop || requested || scheduled || done == max_steps) {
      auto path = checkpoint(done, result.final_loss);
      if (!path.ok()) return path.status();
      result.last_checkpoint = *path;
      last_checkpoint_ = *path;
      last_checkpoint_step_ = done;
      if (is_rank0()) {
        // request_id is the command's (0 for scheduled checkpoints and signals).
        link_->report_checkpoint(done, *path, agreed.request_id);
        metrics_.message(absl::StrCat("checkpoint ", *path));
      }
    }
    if (stop && done < max_steps) {
      result.stopped_early = true;
      if (is_rank0()) metrics_.message(absl::StrCat("stopped at step ", done, " (checkpointed)"));
      break;
    }
  }
  if (is_rank0()) metrics_.finish();
  return result;
}

void request_stop() { g_stop_requested.store(true); }

absl::StatusOr<TrainResult> run_training(const accum::v1::JobSpec& spec, comm::Communicator* comm,
                                         link::ControlLink* link) {
  Trainer trainer(spec, comm, link);
  try {
    return trainer.run();
  } catch (const std::bad_alloc&) {
    // The arithmetic said the job fits (setup checks it first) and an allocation failed
    // anyway: while building the model, the reducer or Adam's state, or in a micro-step.
    const absl::Status status = trainer.out_of_memory("out of memory", true);
    // Other ranks may be in a collective with this one, and buckets may be in flight.
    if (comm->world_size() > 1) {
      comm::abort_job(comm, std::string(status.message()), worker::kExitRuntimeFailure);
    }
    return status;
  } catch (const comm::CommError& error) {
    // A collective failed or timed out: the ranks are out of step and the buffers of
    // the collectives still in flight must not be waited for again (unwinding would
    // run ~GradReducer, which waits another full timeout). End the job here, with the
    // trainer and its buffers still alive, naming the rank and the optimizer step.
    comm::abort_job(comm, error.what(), worker::kExitRuntimeFailure);
  } catch (const std::exception& error) {
    // Any other failure, with other ranks: the same reasons to end the job from here.
    if (comm->world_size() > 1) comm::abort_job(comm, error.what(), worker::kExitRuntimeFailure);
    throw;
  }
}

}  // namespace accum::train
