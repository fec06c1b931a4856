// train/failure_agreement.h — how the ranks of a job fail together at a point every rank
// reaches, whether it failed or not: before training (the spec, the data, the checkpoint to
// resume from, rank 0's link and metrics file). Every rank learns every rank's error, so
// rank 0 alone reports it, once, and every rank ends with the same exit code through
// MPI_Finalize instead of MPI_Abort: a 64-rank job says one thing once, not 64 times.
//
// An error every rank found alike is reported as it is; one that differs between ranks
// (a file missing on one node) keeps each distinct message, naming its ranks.
#pragma once

#include "absl/status/status.h"
#include "daemon/worker/comm/communicator.h"

namespace accum::train {

// The worker's exit code (daemon/worker/exit_codes.h) for a run that failed with `status`:
// kExitBadInput for input a rerun would reject again, else kExitRuntimeFailure.
// REQUIRES: !status.ok().
int exit_code_for(const absl::Status& status);

// Every rank calls this at the same point with its own outcome, and every rank gets the
// same answer: OK when every rank's outcome is OK, else an agreed failure (see
// is_agreed_failure()) whose message has one line per distinct error (describe_groups in
// comm/rank_messages.h) and whose code is an input error's when any rank's is, so that
// exit_code_for() gives every rank the same code. Throws CommError as a collective does.
absl::Status agree_on_failure(comm::Communicator* comm, const absl::Status& mine);

// The same over MPI_COMM_WORLD, before any Communicator exists (see
// comm::all_gather_messages_over_world). REQUIRES: launched under mpirun.
absl::Status agree_on_failure_over_world(const absl::Status& mine);

// Whether `status` came from an agreement: every rank holds it and ends with it, so no
// rank needs to end the others, and only rank 0 reports it.
bool is_agreed_failure(const absl::Status& status);

}  // namespace accum::train
