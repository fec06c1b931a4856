// client/commands.h — accumctl's verbs. Each returns a process exit code
// (connection.h) and prints either text for people or, with --output json, the
// reply as canonical protobuf JSON (one object per line for streams).
#pragma once

#include <cstdint>
#include <string>

#include "client/connection.h"

namespace accum::ctl {

int submit_job(Connection& connection, const std::string& spec_path);
int list_jobs(Connection& connection, const std::string& state_filter);
int show_job(Connection& connection, const std::string& id);
// Follows a job to its end. If accumd goes away mid-watch (a restart), reconnects for up
// to `reconnect_s` seconds and goes on from the last step shown (0: exit 3 at once).
int watch_job(Connection& connection, const std::string& id, int reconnect_s);
int cancel_job(Connection& connection, const std::string& id, bool force);
// Submits a new job continuing the ended job `id` from its latest checkpoint (max_steps 0: the
// job's own); prints the new job's id.
int continue_job(Connection& connection, const std::string& id, int64_t max_steps);
// Removes an ended job's record and folder (checkpoints included); prints what it freed.
int delete_job(Connection& connection, const std::string& id);
int checkpoint_job(Connection& connection, const std::string& id);
int list_checkpoints(Connection& connection, const std::string& id);
// Prints a job's log lines; with `follow`, rides out an accumd restart as watch_job does.
int stream_logs(Connection& connection, const std::string& id, bool follow, int rank, int tail,
                int reconnect_s);

}  // namespace accum::ctl
