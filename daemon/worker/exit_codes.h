// worker/exit_codes.h — accum-worker's exit statuses: the contract between the
// worker and accumd's supervisor (daemon/control/job_supervision.cpp), which reads
// them from mpirun's exit status and never links the worker.
//
// Under mpirun the status is the job's, not one rank's: a rank that fails ends the
// whole job through comm::abort_job(comm, why, code), i.e. MPI_Abort with that code,
// and Open MPI's mpirun (4.1) exits with the code MPI_Abort was given. Failures before
// training (the spec, the data, the checkpoint to resume from, the link's CA file) are
// agreed on by every rank instead (train/failure_agreement.h): every rank exits with the
// same code after MPI_Finalize, and mpirun passes that on too.
#pragma once

namespace accum::worker {

// Trained to max_steps, or stopped by SIGTERM / a STOP command after the current
// optimizer step was finished and checkpointed.
constexpr int kExitSuccess = 0;
// Any other failure (a failed or timed-out collective, an error while training): a
// rerun may not meet it again, so accumd restarts the job from its latest checkpoint.
constexpr int kExitRuntimeFailure = 1;
// Bad input: the spec, a data file, a checkpoint or the link's CA file. A rerun
// reads the same input and fails the same way, so accumd fails the job at once.
// Also training that diverged (a loss or gradient norm that is not finite, or weights
// an update left so): training is bit-reproducible, so a rerun from the last
// checkpoint diverges at the same step; the spec's optimizer settings must change.
// So is a spec whose memory arithmetic exceeds all the memory the device has.
constexpr int kExitBadInput = 2;

}  // namespace accum::worker
