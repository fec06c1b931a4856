// io/checkpoint_dir.h — the checkpoint directory contract (DESIGN.md "Checkpoints").
//
//   <dir>/step_00000100/{model.safetensors, optimizer*.safetensors, state.json, manifest.json}
//   <dir>/latest          (text file naming the newest complete step directory)
//
// A checkpoint is written into <dir>/.tmp-step_XXXXXXXX-<pid>/, every file fsynced,
// manifest.json (every file with size and sha256) written and fsynced last, the
// directory renamed into place and the parent fsynced, then `latest` replaced
// atomically (write temp + fsync + rename). A directory without a matching
// manifest is never complete; readers refuse it and name the wrong file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace accum::io {

std::string step_dir_name(int64_t step);  // "step_00000100"
// Inverse of step_dir_name: "step_" followed by at least 8 digits; nullopt otherwise.
std::optional<int64_t> parse_step_dir_name(std::string_view name);

// Builds one checkpoint. Usage: begin(), write files into path(), commit().
// Destroying an uncommitted writer removes its temporary directory. `latest` is
// set to the committed step. Step directories above it (a timeline the run went back
// from, by resuming from an older step) are moved into <root>/abandoned-by-step_S/
// first; set_aside_note() says so. apply_retention() removes that folder with step S.
// Thread safety: none; one writer per step directory at a time.
class CheckpointWriter {
 public:
  CheckpointWriter(std::string root_dir, int64_t step);
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  absl::Status begin();             // creates root and the temporary directory
  const std::string& path() const;  // the temporary directory to write files into
  // Hashes every file, writes manifest.json, fsyncs, renames to step_XXXXXXXX
  // (replacing an older directory of the same step only after the new one is
  // complete), updates `latest`. Returns the final directory. On an error, committed()
  // tells whether the step directory was already complete in place (only `latest`
  // failed; the message says so) or nothing of it was kept.
  absl::StatusOr<std::string> commit();
  bool committed() const { return committed_; }
  // What commit() moved aside (for the log), or "" when nothing.
  const std::string& set_aside_note() const { return set_aside_note_; }

 private:
  absl::Status set_aside_later_steps();

  std::string root_, tmp_, final_;
  int64_t step_;
  bool committed_ = false;
  std::string set_aside_note_;
};

// A step directory's manifest.json: {"step": s, "files": [{"name", "size", "sha256"}]}.
struct ManifestEntry {
  std::string name;  // a plain file name inside the step directory
  int64_t size = 0;
  std::string sha256;
};
struct CheckpointManifest {
  int64_t step = 0;
  std::vector<ManifestEntry> files;
  // The entry named `name`, or nullptr.
  const ManifestEntry* find(std::string_view name) const;
};
// Reads and checks the shape of <step_dir>/manifest.json (NOT_FOUND: no such directory;
// INVALID_ARGUMENT: the path is not a directory; DATA_LOSS: missing or malformed manifest, a file
// name that is not a plain name, a step that differs from the directory's name). Does not look at
// the listed files.
absl::StatusOr<CheckpointManifest> read_manifest(const std::string& step_dir);

// Whether `root_dir` holds any trace of a checkpoint: a `latest` file or a step_*
// directory, complete or not. A resume from "latest" that finds nothing usable in
// such a directory must fail, not start from scratch.
bool has_checkpoint_traces(const std::string& root_dir);

// Verifies a step directory against its manifest (missing manifest, missing file,
// size or sha256 mismatch, extra file in the manifest missing on disk) — the error
// names the file.
absl::Status verify_checkpoint(const std::string& step_dir);
// The cheap half of verify_checkpoint(): manifest.json parses and every file it
// lists exists with its size, without reading the files (for callers that must
// answer quickly, like accumd at submit; the reader verifies fully when it loads).
absl::Status check_checkpoint_complete(const std::string& step_dir);
// Resolves "latest" or a path (absolute; a relative one is taken as given when it
// exists, else under root, so "step_00000100" works). Verifies it fully (sha256 of
// every file) and returns the step directory. "latest" is the newest step directory
// under root that verifies, starting from the one <root>/latest names: a newer one
// that verifies wins (it was committed, then `latest` could not be updated, e.g. on a
// full disk), and when `latest` is missing or damaged the newest that verifies is taken;
// NOT_FOUND when none does. `passed_over` (if given) says what was wrong with each newer
// checkpoint it skipped, and `stale_latest` (if given) names both when a newer one won
// over `latest`, so the caller can tell the user; both are left empty otherwise.
// An explicit path that exists but is not a directory is INVALID_ARGUMENT.
absl::StatusOr<std::string> resolve_checkpoint(const std::string& root_dir,
                                               const std::string& resume_from,
                                               std::string* passed_over = nullptr,
                                               std::string* stale_latest = nullptr);
// Complete checkpoints under root, oldest first, as (step, path). "Complete" here
// is the cheap check (manifest parses, every listed file exists with its size);
// verify_checkpoint() also compares the sha256 of every file.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& root_dir);
// Makes sure `root_dir` can hold checkpoints before any is written: creates it (and its
// parents) when missing, then requires a directory this process may write into. Otherwise
// FAILED_PRECONDITION naming what is in the way (a regular file at `root_dir` or above it,
// a folder without write permission).
absl::Status ensure_checkpoint_root(const std::string& root_dir);
// Keeps the newest `keep_last` complete checkpoints (0 keeps all) plus the one
// `latest` names; removes stale temp entries (".tmp-*-<pid>" of pids no longer
// alive on this host), and (keep_last > 0) each `abandoned-by-step_S[-n]/` folder
// whose S is older than every checkpoint it keeps: the set-aside timeline goes with
// the checkpoint that set it aside. Deleted directories are first renamed to a temp
// name, so a half-deleted one never looks like a checkpoint.
absl::Status apply_retention(const std::string& root_dir, int keep_last);

// Small helpers shared by checkpoint code.
absl::StatusOr<std::string> sha256_file(const std::string& path);
absl::Status write_file_durable(const std::string& path, const std::string& contents);  // + fsync
absl::Status fsync_dir(const std::string& dir);
// create_directories(), then fsyncs the parent of every folder it created, so the new
// folders survive a power loss. OK when `dir` already exists.
absl::Status create_directories_durable(const std::string& dir);
absl::StatusOr<std::string> read_file(const std::string& path);

}  // namespace accum::io
