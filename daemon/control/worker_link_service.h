// control/worker_link_service.h — the accum.v1.WorkerLink service: rank 0's
// stream of events (hello first, then metrics, checkpoint completions,
// heartbeats) and the daemon's commands back.
//
// The handler thread reads; a per-connection writer thread drains the command
// queue, so JobManager can send() without blocking on the network.
// Thread safety: gRPC calls Connect concurrently; no shared state here.
#pragma once

#include "daemon/control/auth.h"
#include "daemon/control/job_manager.h"
#include "proto/accum.grpc.pb.h"

namespace accum::control {

class WorkerLinkService final : public accum::v1::WorkerLink::Service {
 public:
  // `manager` and `auth` must outlive the service.
  WorkerLinkService(JobManager* manager, const TokenAuth* auth) : manager_(manager), auth_(auth) {}

  grpc::Status Connect(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<accum::v1::WorkerCommand, accum::v1::WorkerEvent>* stream) final;

 private:
  JobManager* manager_;
  const TokenAuth* auth_;
};

}  // namespace accum::control
