// link/control_link.h — rank 0's connection to accumd (the WorkerLink service).
//
// The trainer reports every optimizer step's metrics, checkpoint completions and
// heartbeats, and polls for commands at each optimizer-step boundary; rank 0
// broadcasts the command to every rank so all ranks act at the same boundary.
// When the worker was not started by accumd the link is a no-op (NullControlLink).
//
// The worker finds the daemon through its environment (set by accumd's launcher):
//   ACCUM_CONTROL_ADDR   host:port of accumd's WorkerLink service
//   ACCUM_JOB_ID         the job's id
//   ACCUM_TOKEN_FILE     bearer token file (optional)
//   ACCUM_ATTEMPT        restart attempt number (optional)
//
// Thread safety: all methods are called from the trainer's thread; implementations
// may run a background thread for the stream and heartbeats.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "proto/accum.pb.h"

namespace accum::link {

struct Command {
  accum::v1::WorkerCommand::Kind kind = accum::v1::WorkerCommand::NONE;
  uint64_t request_id = 0;
};

class ControlLink {
 public:
  virtual ~ControlLink() = default;
  virtual void hello(const accum::v1::WorkerHello& hello) = 0;
  virtual void report_metrics(const accum::v1::StepMetrics& metrics) = 0;
  virtual void report_checkpoint(int64_t step, const std::string& path, uint64_t request_id) = 0;
  // Progress inside a step (cheap; implementations rate-limit heartbeats).
  virtual void heartbeat(int64_t step, int micro_step) = 0;
  // Returns and clears the oldest pending command (kind NONE when there is none).
  virtual Command poll_command() = 0;
  // Flushes pending events before the process exits: 5 s at most in all, 3 s when no accumd
  // takes them.
  virtual void close() = 0;
};

// A link that does nothing (standalone runs).
std::unique_ptr<ControlLink> make_null_link();
// The gRPC link when ACCUM_CONTROL_ADDR is set (rank 0 only), else the null link. The
// launcher's variables: ACCUM_JOB_ID, ACCUM_ATTEMPT, ACCUM_TOKEN_FILE, and ACCUM_CONTROL_TLS_CA
// (PEM roots; set when accumd serves TLS — the link then verifies it, else plaintext).
// Throws std::runtime_error when ACCUM_CONTROL_TLS_CA names no readable PEM certificate.
std::unique_ptr<ControlLink> make_link_from_env();

}  // namespace accum::link
