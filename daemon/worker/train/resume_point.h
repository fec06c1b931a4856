// train/resume_point.h — which checkpoint a run resumes from (checkpoint.resume_from),
// agreed by every rank.
//
// Each rank resolves resume_from in its own view of checkpoint.dir (which may be a
// node-local folder), then the ranks compare what they found: the step and the first
// bits of the weights' sha256. They go on only when all found the same checkpoint, or
// all found nothing; otherwise they would train on from different steps with mixed
// weights.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "daemon/worker/comm/communicator.h"
#include "proto/accum.pb.h"

namespace accum::train {

// Collective: every rank calls it. Returns the step directory to resume from, or "" for
// a fresh start (resume_from empty, or "latest" where checkpoint.dir holds no trace of a
// checkpoint: no `latest`, no step directory). An input error (exit 2) when this rank
// cannot resolve it (a `latest` or step directories that no longer verify is one: the
// run must not silently start over), or when the ranks resolved different checkpoints
// (FAILED_PRECONDITION naming what each rank found).
absl::StatusOr<std::string> resolve_resume_checkpoint(comm::Communicator* comm,
                                                      const accum::v1::CheckpointSpec& checkpoint);

}  // namespace accum::train
