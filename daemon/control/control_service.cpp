// control/control_service.cpp — proto <-> JobManager for the Control service.
#include "daemon/control/control_service.h"

#include "daemon/control/job_files.h"
#include "daemon/control/job_state.h"
#include "daemon/control/valid_utf8.h"

namespace accum::control {
namespace {

constexpr auto kDefaultCheckpointDeadline = std::chrono::minutes(10);

// Ends a stream when the job is over or the client went away.
bool job_finished(JobManager* manager, const std::string& id) {
  auto record = manager->record(id);
  return !record.ok() || is_terminal(record->state);
}

}  // namespace

grpc::Status to_grpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return {static_cast<grpc::StatusCode>(status.code()), std::string(status.message())};
}

#define ACCUM_CHECK_AUTH(context) \
  if (auto auth_status = auth_->check(*(context)); !auth_status.ok()) return auth_status

grpc::Status ControlService::SubmitJob(grpc::ServerContext* context,
                                       const accum::v1::SubmitJobRequest* request,
                                       accum::v1::SubmitJobResponse* response) {
  ACCUM_CHECK_AUTH(context);
  auto job = manager_->submit(request->spec(), request->spec_dir());
  if (!job.ok()) return to_grpc(job.status());
  *response->mutable_job() = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status ControlService::GetJob(grpc::ServerContext* context,
                                    const accum::v1::GetJobRequest* request,
                                    accum::v1::JobStatus* response) {
  ACCUM_CHECK_AUTH(context);
  auto job = manager_->get(request->id());
  if (!job.ok()) return to_grpc(job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status ControlService::ListJobs(grpc::ServerContext* context,
                                      const accum::v1::ListJobsRequest* request,
                                      accum::v1::ListJobsResponse* response) {
  ACCUM_CHECK_AUTH(context);
  std::vector<accum::v1::JobState> states;
  for (int state : request->states()) {
    if (!accum::v1::JobState_IsValid(state) || state == accum::v1::JOB_STATE_UNSPECIFIED) {
      return {grpc::StatusCode::INVALID_ARGUMENT,
              "states: unknown job state " + std::to_string(state) + "; expected " +
                  std::to_string(accum::v1::QUEUED) + " (QUEUED) to " +
                  std::to_string(accum::v1::CANCELLED) + " (CANCELLED)"};
    }
    states.push_back(static_cast<accum::v1::JobState>(state));
  }
  auto page = manager_->list(states, request->page_size(), request->page_token());
  if (!page.ok()) return to_grpc(page.status());
  for (auto& job : page->first) *response->add_jobs() = std::move(job);
  response->set_next_page_token(page->second);
  return grpc::Status::OK;
}

grpc::Status ControlService::WatchJob(grpc::ServerContext* context,
                                      const accum::v1::WatchJobRequest* request,
                                      grpc::ServerWriter<accum::v1::JobEvent>* writer) {
  ACCUM_CHECK_AUTH(context);
  auto start = manager_->watch(request->id());
  if (!start.ok()) return to_grpc(start.status());
  auto subscription = start->subscription;
  auto finish = [&](grpc::Status status) {
    manager_->unwatch(request->id(), subscription);
    return status;
  };
  for (const auto& event : start->backlog) {
    if (!writer->Write(event)) return finish(grpc::Status::CANCELLED);
  }
  if (!subscription) return finish(grpc::Status::OK);  // already ended
  while (!context->IsCancelled()) {
    auto event = subscription->next(std::chrono::milliseconds(500));
    if (!event) {
      if (subscription->closed()) return finish({grpc::StatusCode::UNAVAILABLE, "accumd stopping"});
      continue;
    }
    if (!writer->Write(*event)) return finish(grpc::Status::CANCELLED);
    if (event->has_status() && is_terminal(event->status().state()))
      return finish(grpc::Status::OK);
  }
  return finish(grpc::Status::CANCELLED);
}

grpc::Status ControlService::CancelJob(grpc::ServerContext* context,
                                       const accum::v1::CancelJobRequest* request,
                                       accum::v1::JobStatus* response) {
  ACCUM_CHECK_AUTH(context);
  auto job = manager_->cancel(request->id(), request->force());
  if (!job.ok()) return to_grpc(job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status ControlService::ContinueJob(grpc::ServerContext* context,
                                         const accum::v1::ContinueJobRequest* request,
                                         accum::v1::SubmitJobResponse* response) {
  ACCUM_CHECK_AUTH(context);
  auto job = manager_->continue_job(request->id(), request->max_steps());
  if (!job.ok()) return to_grpc(job.status());
  *response->mutable_job() = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status ControlService::CheckpointJob(grpc::ServerContext* context,
                                           const accum::v1::CheckpointJobRequest* request,
                                           accum::v1::CheckpointInfo* response) {
  ACCUM_CHECK_AUTH(context);
  auto deadline = Clock::now() + kDefaultCheckpointDeadline;
  // Honour a shorter client deadline (the system clock's, converted).
  const auto client_deadline = context->deadline();
  if (client_deadline != std::chrono::system_clock::time_point::max()) {
    deadline =
        std::min(deadline, Clock::now() + (client_deadline - std::chrono::system_clock::now()));
  }
  auto info =
      manager_->checkpoint(request->id(), deadline, [context] { return context->IsCancelled(); });
  if (!info.ok()) return to_grpc(info.status());
  *response = *std::move(info);
  return grpc::Status::OK;
}

grpc::Status ControlService::ListCheckpoints(grpc::ServerContext* context,
                                             const accum::v1::ListCheckpointsRequest* request,
                                             accum::v1::ListCheckpointsResponse* response) {
  ACCUM_CHECK_AUTH(context);
  auto list = manager_->checkpoints(request->id());
  if (!list.ok()) return to_grpc(list.status());
  for (auto& info : *list) {
    info.set_path(valid_utf8(info.path()));
    *response->add_checkpoints() = std::move(info);
  }
  return grpc::Status::OK;
}

grpc::Status ControlService::DeleteJob(grpc::ServerContext* context,
                                       const accum::v1::DeleteJobRequest* request,
                                       accum::v1::DeleteJobResponse* response) {
  ACCUM_CHECK_AUTH(context);
  auto deleted = manager_->delete_job(request->id());
  if (!deleted.ok()) return to_grpc(deleted.status());
  response->set_id(request->id());
  response->set_job_dir(valid_utf8(deleted->job_dir));
  response->set_bytes_freed(deleted->bytes_freed);
  return grpc::Status::OK;
}

grpc::Status ControlService::StreamLogs(grpc::ServerContext* context,
                                        const accum::v1::StreamLogsRequest* request,
                                        grpc::ServerWriter<accum::v1::LogLine>* writer) {
  ACCUM_CHECK_AUTH(context);
  if (request->tail() < 0) return {grpc::StatusCode::INVALID_ARGUMENT, "tail: negative"};
  auto record = manager_->record(request->id());
  if (!record.ok()) return to_grpc(record.status());
  if (request->rank() < -1 || request->rank() >= record->world_size) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            absl::StrCat("rank: got ", request->rank(), "; job ", record->id, " has ",
                         record->world_size, record->world_size == 1 ? " rank" : " ranks",
                         ", so expected -1 (all) or 0..", record->world_size - 1)};
  }
  const std::string id = request->id();
  stream_job_logs(
      record->job_dir, request->rank(), request->tail(), request->follow(),
      [&](int rank, int64_t index, const std::string& line) {
        accum::v1::LogLine message;
        message.set_rank(rank);
        message.set_line(valid_utf8(line));  // a log may hold any bytes
        message.set_index(index);
        return writer->Write(message);
      },
      [&] { return context->IsCancelled() || job_finished(manager_, id); });
  return grpc::Status::OK;
}

}  // namespace accum::control
