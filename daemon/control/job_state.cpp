// control/job_state.cpp — the transition table of job_state.h.
#include "daemon/control/job_state.h"

namespace accum::control {

using accum::v1::CANCELLED;
using accum::v1::CANCELLING;
using accum::v1::FAILED;
using accum::v1::QUEUED;
using accum::v1::RESTARTING;
using accum::v1::RUNNING;
using accum::v1::STARTING;
using accum::v1::SUCCEEDED;

bool is_terminal(JobState state) {
  return state == SUCCEEDED || state == FAILED || state == CANCELLED;
}

bool transition_allowed(JobState from, JobState to) {
  if (is_terminal(from) || from == to) return false;
  switch (to) {
    case STARTING:
      return from == QUEUED || from == RESTARTING;
    case RUNNING:
      // STARTING -> RUNNING on the worker's hello; RESTARTING -> RUNNING when a
      // re-attached worker (daemon restart) says hello again.
      return from == STARTING || from == RESTARTING;
    case RESTARTING:
      return from == STARTING || from == RUNNING;
    case CANCELLING:
      return from == STARTING || from == RUNNING || from == RESTARTING;
    case SUCCEEDED:
      // A worker that finishes before its hello was processed still succeeded, and so does
      // one whose graceful cancel arrived during its last step: it trained to max_steps.
      return from == RUNNING || from == STARTING || from == CANCELLING;
    case CANCELLED:
    case FAILED:
      return true;  // from any non-terminal state
    default:
      return false;
  }
}

const std::string& state_name(JobState state) { return accum::v1::JobState_Name(state); }

}  // namespace accum::control
