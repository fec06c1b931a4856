// train/trainer.h — the accumulation loop of one rank (DESIGN.md "The flow of one
// optimizer step"):
//
//   zero grads; for i in 0..K-1: forward, backward (ADDS into the fp32 buffer);
//   on micro-step K-1 the GradReducer reduces buckets as the backward finishes them;
//   one scalar exchange (loss sum, counted targets, stop/command flags);
//   grad_scale = 1 / global counted targets (token-weighted normalization, exact for
//   the global batch); global norm; clip; AdamW; (ZeRO-1) all-gather parameters;
//   rank 0 reports metrics; every rank acts on the same command at the same boundary.
//
// Thread safety: one Trainer per process, driven by main()'s thread. request_stop()
// is async-signal-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/worker/comm/communicator.h"
#include "daemon/worker/link/control_link.h"
#include "proto/accum.pb.h"

namespace accum::train {

struct TrainResult {
  int64_t final_step = 0;
  double final_loss = 0;
  bool stopped_early = false;  // SIGTERM / STOP command: checkpointed and left
  std::string last_checkpoint;
};

// Runs the job to max_steps (or until a stop). `spec` must be validated.
absl::StatusOr<TrainResult> run_training(const accum::v1::JobSpec& spec, comm::Communicator* comm,
                                         link::ControlLink* link);

// Set from a signal handler: finish the current optimizer step, checkpoint, exit 0.
void request_stop();

}  // namespace accum::train
