// train/trainer_internal.h — the Trainer behind run_training() (trainer.h), shared by the
// files that define its parts: trainer_setup.cpp (the back end, the memory arithmetic, the
// data, the model, the reducer and the optimizer) and trainer.cpp (resume, the loop of
// optimizer steps, evaluation, checkpoints). Not for use outside train/.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/worker/comm/communicator.h"
#include "daemon/worker/comm/grad_reducer.h"
#include "daemon/worker/data/token_stream.h"
#include "daemon/worker/io/checkpoint_dir_lock.h"
#include "daemon/worker/link/control_link.h"
#include "daemon/worker/model/gpt2.h"
#include "daemon/worker/train/memory_plan.h"
#include "daemon/worker/train/metrics.h"
#include "daemon/worker/train/optimizer.h"
#include "daemon/worker/train/trainer.h"
#include "kernels/backend.h"
#include "proto/accum.pb.h"

namespace accum::train {

// What every rank agrees on after an optimizer step's single scalar exchange.
struct StepAgreement {
  double loss_sum = 0;
  double counted = 0;
  bool stop = false;
  accum::v1::WorkerCommand::Kind command = accum::v1::WorkerCommand::NONE;
  uint64_t request_id = 0;
  double collectives_before_last_micro_step = 0;  // summed over ranks
};

class Trainer {
 public:
  Trainer(const accum::v1::JobSpec& spec, comm::Communicator* comm, link::ControlLink* link)
      : spec_(spec), comm_(comm), link_(link) {}

  absl::StatusOr<TrainResult> run();
  // RESOURCE_EXHAUSTED for an allocation that failed (`what`): the memory arithmetic and the
  // largest micro-batch that fits. `arithmetic_fit`: the arithmetic said B fits and the
  // device disagreed, so the advice starts below B.
  absl::Status out_of_memory(const std::string& what, bool arithmetic_fit) const;

 private:
  // setup() and restore_and_open_metrics() fail on any rank without a collective after the
  // failure: run() has every rank agree on each one's outcome (failure_agreement.h), the
  // point every rank reaches before the next collective, failed or not.
  absl::Status setup();
  absl::Status restore_or_init();
  // restore_or_init(), then rank 0 opens the metrics file.
  absl::Status restore_and_open_metrics();
  std::pair<double, double> accumulate_window(int64_t step);
  // Where this rank's communication fell within the last window (see StepCommDetail).
  struct WindowComm {
    int64_t first_gradient_collective_micro_step = -1;
    int64_t collectives_before_last_micro_step = 0;
  };
  // Token-weighted validation loss over eval.batches micro-batches per rank, all ranks
  // together; nullopt without validation data or when none of its targets is counted.
  std::optional<double> evaluate();
  absl::StatusOr<std::string> checkpoint(int64_t step, double last_loss);
  // INVALID_ARGUMENT for optimizer step `step` (1-based) whose loss or gradient norm is not
  // finite: what diverged, the last checkpoint to go back to, and what to change.
  absl::Status diverged(int64_t step, double loss, double grad_norm) const;
  bool is_rank0() const { return comm_->rank() == 0; }

  accum::v1::JobSpec spec_;
  comm::Communicator* comm_;
  std::unique_ptr<io::CheckpointDirLock> dir_lock_;  // rank 0's, for the whole run
  link::ControlLink* link_;
  int world_ = 1, K_ = 1, B_ = 1, T_ = 1;
  int64_t tokens_per_update_ = 0;
  double model_flops_per_token_ = 0;  // model::flops_per_token (StepMetrics.model_tflops)
  double peak_tflops_ = 0;            // the back end's, 0 when unknown
  int64_t start_step_ = 0;
  int64_t updates_applied_ = 0;  // AdamW updates made so far (skipped steps do not count)
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<model::Gpt2> model_;
  std::unique_ptr<data::TokenStream> train_data_, val_data_;
  std::unique_ptr<comm::GradReducer> reducer_;
  std::unique_ptr<AdamW> optimizer_;
  MetricsSink metrics_;
  MemoryPlan plan_;
  size_t owned_estimate_ = 0;                 // parameters this rank keeps Adam state for
  std::optional<size_t> budget_;              // memory_budget() before the model existed
  std::optional<size_t> device_used_before_;  // Backend::memory_info's used bytes, likewise
  // What the spec asks for: batch.tokens_per_update, or grad_accum_steps x B x T x world.
  int64_t spec_tokens_per_update_ = 0;
  data::MicroBatch batch_;
  StepAgreement last_;
  double last_grad_norm_ = 0;
  WindowComm window_comm_;
  // The newest checkpoint this run resumed from or wrote, "" before there is one; every
  // one of them holds finite weights (the reader and the writer refuse any other).
  std::string last_checkpoint_;
  int64_t last_checkpoint_step_ = 0;
};

}  // namespace accum::train
