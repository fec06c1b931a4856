// control/job_state.h — the job lifecycle as a pure state machine.
//
//   QUEUED -> STARTING -> RUNNING -> SUCCEEDED
//                 |          |  \-> RESTARTING -> STARTING (next attempt)
//                 |          \----> CANCELLING -> CANCELLED
//                 |                       \-> SUCCEEDED (the cancel met the last step)
//                 \-> FAILED (any non-terminal state may fail or be cancelled)
//
// The JobStore refuses any transition this table does not allow, so a bug in the
// supervisor shows up as FAILED_PRECONDITION instead of a corrupted history.
#pragma once

#include <string>

#include "proto/accum.pb.h"

namespace accum::control {

using accum::v1::JobState;

bool is_terminal(JobState state);
// True when a job in `from` may move to `to` (self-transitions are not allowed).
bool transition_allowed(JobState from, JobState to);
// "RUNNING", "QUEUED", ... (the proto enum name).
const std::string& state_name(JobState state);

}  // namespace accum::control
