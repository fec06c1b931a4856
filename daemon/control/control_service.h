// control/control_service.h — the accum.v1.Control gRPC service.
//
// Each method is a thin `final` override (route_guide style): check the token,
// unpack the request, call JobManager, translate absl::Status into a gRPC status
// with the same code, fill the reply. No job logic lives here.
//
// Thread safety: stateless apart from the pointers it was given; gRPC calls the
// methods concurrently.
#pragma once

#include "daemon/control/auth.h"
#include "daemon/control/job_manager.h"
#include "proto/accum.grpc.pb.h"

namespace accum::control {

grpc::Status to_grpc(const absl::Status& status);

class ControlService final : public accum::v1::Control::Service {
 public:
  // `manager` and `auth` must outlive the service.
  ControlService(JobManager* manager, const TokenAuth* auth) : manager_(manager), auth_(auth) {}

  grpc::Status SubmitJob(grpc::ServerContext* context, const accum::v1::SubmitJobRequest* request,
                         accum::v1::SubmitJobResponse* response) final;
  grpc::Status GetJob(grpc::ServerContext* context, const accum::v1::GetJobRequest* request,
                      accum::v1::JobStatus* response) final;
  grpc::Status ListJobs(grpc::ServerContext* context, const accum::v1::ListJobsRequest* request,
                        accum::v1::ListJobsResponse* response) final;
  grpc::Status WatchJob(grpc::ServerContext* context, const accum::v1::WatchJobRequest* request,
                        grpc::ServerWriter<accum::v1::JobEvent>* writer) final;
  grpc::Status CancelJob(grpc::ServerContext* context, const accum::v1::CancelJobRequest* request,
                         accum::v1::JobStatus* response) final;
  grpc::Status ContinueJob(grpc::ServerContext* context,
                           const accum::v1::ContinueJobRequest* request,
                           accum::v1::SubmitJobResponse* response) final;
  grpc::Status CheckpointJob(grpc::ServerContext* context,
                             const accum::v1::CheckpointJobRequest* request,
                             accum::v1::CheckpointInfo* response) final;
  grpc::Status ListCheckpoints(grpc::ServerContext* context,
                               const accum::v1::ListCheckpointsRequest* request,
                               accum::v1::ListCheckpointsResponse* response) final;
  grpc::Status StreamLogs(grpc::ServerContext* context, const accum::v1::StreamLogsRequest* request,
                          grpc::ServerWriter<accum::v1::LogLine>* writer) final;
  grpc::Status DeleteJob(grpc::ServerContext* context, const accum::v1::DeleteJobRequest* request,
                         accum::v1::DeleteJobResponse* response) final;

 private:
  JobManager* manager_;
  const TokenAuth* auth_;
};

}  // namespace accum::control
