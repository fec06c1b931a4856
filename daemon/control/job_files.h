// control/job_files.h — reading what a job leaves on disk: its checkpoints
// (DESIGN.md "Checkpoints") and its per-rank logs (launcher.h layout).
//
// The daemon reads these files but never writes a checkpoint itself; the only
// change it makes is removing a `.tmp-*` directory a killed worker left behind.
// Thread safety: free functions over the file system.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "proto/accum.pb.h"

namespace accum::control {

// Complete checkpoints (a step_XXXXXXXX dir holding manifest.json), oldest first.
std::vector<accum::v1::CheckpointInfo> list_job_checkpoints(const std::string& checkpoint_dir);
// Removes unfinished `.tmp-*` checkpoint directories; returns how many.
int remove_partial_checkpoints(const std::string& checkpoint_dir);

// Log files per rank, for all attempts in order: rank -> [files].
std::map<int, std::vector<std::string>> rank_log_files(const std::string& job_dir);
// The last `count` lines of a file (all when count <= 0).
std::vector<std::string> tail_lines(const std::string& path, int count);
// A short digest of why an attempt failed: the rank mpirun blames (or -1), the
// last lines of the logs, and the last error the worker reported in them (its
// "accum-worker: error: " lines, daemon/worker/main.cpp), without that prefix. When the
// blamed rank's logs hold no such error and rank 0's do (a failure every rank agreed on,
// which rank 0 alone reports), the digest is rank 0's.
struct FailureSummary {
  int rank = -1;
  std::string last_lines;
  std::string last_error;  // "" when the lines hold none
};
FailureSummary summarize_failure(const std::string& job_dir, int attempt, int lines);

}  // namespace accum::control

namespace accum::control {

// Streams a job's log lines: the last `tail` lines of each rank (0: all), then,
// when `follow`, new lines as they are written, until should_stop() returns true
// (it is asked every ~200 ms; after it says stop, lines already written are still
// emitted). rank < 0: all ranks. emit() returning false ends the stream. `index` is the
// line's 0-based number in its rank's log (all attempts' files in order), the same in
// every stream: a client that reconnects skips what it has.
void stream_job_logs(
    const std::string& job_dir, int rank, int tail, bool follow,
    const std::function<bool(int rank, int64_t index, const std::string& line)>& emit,
    const std::function<bool()>& should_stop);

}  // namespace accum::control
