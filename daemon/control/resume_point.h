// control/resume_point.h — where each attempt of a job starts from.
//
// checkpoint.resume_from in a submitted spec is "" or "latest" (start fresh), or a
// checkpoint step directory, e.g. another job's .../checkpoints/step_00000100 (start
// from it). Either way, once the job has written a checkpoint of its own, a restart
// after a failure resumes from the job's own latest one: its own progress is newer
// than the checkpoint it was seeded from. The stored spec keeps what the user gave;
// each attempt's spec.json carries the resume_from that attempt uses.
//
// Thread safety: free functions over the file system.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "proto/accum.pb.h"

namespace accum::control {

// True when the spec names a checkpoint to start from (not "" or "latest").
bool resumes_from_path(const accum::v1::JobSpec& spec);

// Submit-time check of a resume_from path. REQUIRES: paths resolved, spec validated.
// The directory must be a complete checkpoint (manifest.json lists files present
// with their sizes; the worker compares sha256 sums when it loads) whose state.json
// was written with this spec's model shape, micro-batch geometry, seed and shuffle.
// INVALID_ARGUMENT naming checkpoint.resume_from and what is wrong; OK when the spec
// names no path.
absl::Status check_resume_from(const accum::v1::JobSpec& spec);

// Submit-time check of init_from. REQUIRES: paths resolved. "" or a file whose safetensors
// header reads (the worker checks its tensors against the model when it loads them);
// INVALID_ARGUMENT naming init_from and the header's fault otherwise.
absl::Status check_init_from(const accum::v1::JobSpec& spec);

// The resume_from of the job's next attempt: "latest" once checkpoint.dir holds a
// complete checkpoint or when the spec names no path, else the spec's path.
std::string attempt_resume_from(const accum::v1::JobSpec& spec);

}  // namespace accum::control
