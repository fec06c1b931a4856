// train/checkpointing.h — what a training checkpoint holds and how every rank
// takes part in writing and reading one (DESIGN.md "Checkpoints").
//
//   model.safetensors              fp32 master weights, Hugging Face GPT-2 names
//   optimizer.safetensors          stage 0: exp_avg / exp_avg_sq over the flat buffer
//   optimizer-rank00001-of-00004.safetensors   ZeRO-1: each rank's owned ranges
//   state.json                     accum.v1.CheckpointState as JSON
//   manifest.json                  written last by io::CheckpointWriter
//
// Optimizer files carry metadata "ranges" ("b0:e0,b1:e1,…", flat element ranges in
// file order), so a checkpoint written by N ranks can be re-sharded onto M ranks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/worker/comm/communicator.h"
#include "daemon/worker/model/gpt2.h"
#include "daemon/worker/train/optimizer.h"
#include "proto/accum.pb.h"

namespace accum::train {

// state.json's format_version: what this worker writes and the only one it reads.
constexpr int kCheckpointFormatVersion = 1;

// Writes a complete checkpoint of `state.step()`. Collective: every rank calls it.
// Returns the final directory (on every rank) or the first error of any rank.
// INVALID_ARGUMENT on every rank, with nothing written (no temporary directory, no
// retention), when the weights or the optimizer moments are not finite: a diverged step.
absl::StatusOr<std::string> save_checkpoint(comm::Communicator* comm, model::Gpt2* model,
                                            const AdamW& optimizer,
                                            const accum::v1::CheckpointState& state,
                                            const std::string& root_dir, int keep_last);

struct LoadedCheckpoint {
  accum::v1::CheckpointState state;
  std::string path;
};

// Reads the checkpoint at `step_dir` (verified against its manifest) into the model
// and this rank's optimizer shard. Refuses shapes or a spec that do not match
// (spec::check_resume_compatible), and a state.json whose format_version, step,
// tokens_per_update or optimizer_files cannot be right (FAILED_PRECONDITION/DATA_LOSS
// naming the field and the expected value), and weights or moments that are not finite or
// a negative exp_avg_sq (INVALID_ARGUMENT naming the file, the tensor and the element).
absl::StatusOr<LoadedCheckpoint> load_checkpoint(const std::string& step_dir,
                                                 const accum::v1::JobSpec& spec, model::Gpt2* model,
                                                 AdamW* optimizer);

}  // namespace accum::train
