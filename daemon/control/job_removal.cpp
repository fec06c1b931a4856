// control/job_removal.cpp — deleting an ended job: its record and its folder.
//
// A delete first renames <state_dir>/jobs/<id> to jobs/.deleting-<id> (the folder is gone
// from its place at once, whole), then deletes the record, then the renamed folder, the
// slow part, without holding the manager's lock. An accumd that dies in between leaves
// .deleting-<id>: at the next start recover_deletes() puts it back when the record is
// still there (the delete never happened) and removes it when the record is gone.
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "daemon/control/job_files.h"
#include "daemon/control/job_manager.h"
#include "daemon/control/job_state.h"
#include "daemon/control/resume_point.h"
#include "spdlog/spdlog.h"

namespace accum::control {
namespace fs = std::filesystem;
namespace {

constexpr char kDeletingPrefix[] = ".deleting-";

int64_t bytes_under(const fs::path& dir) {
  int64_t bytes = 0;
  std::error_code error;
  for (fs::recursive_directory_iterator it(dir, error), end; !error && it != end;
       it.increment(error)) {
    if (it->is_regular_file(error) && !it->is_symlink(error)) {
      bytes += static_cast<int64_t>(it->file_size(error));
    }
  }
  return bytes;
}

// Whether `path` lies inside the folder `dir` (both absolute, compared as written).
bool inside(const std::string& path, const std::string& dir) {
  const std::string prefix = fs::path(dir).lexically_normal().string() + "/";
  return fs::path(path).lexically_normal().string().rfind(prefix, 0) == 0;
}

}  // namespace

absl::StatusOr<DeletedJob> JobManager::delete_job(const std::string& id) {
  if (auto status = check_id(id); !status.ok()) return status;
  const fs::path jobs = fs::path(config_.state_dir) / "jobs";
  const fs::path deleting = jobs / (kDeletingPrefix + id);
  DeletedJob deleted;
  {
    std::lock_guard lock(mutex_);  // no launch or submit reads the job's files meanwhile
    if (auto status = settle_unrecorded_end_locked(id, "; delete it once the store takes writes");
        !status.ok()) {
      return status;
    }
    auto record = store_->get(id);
    if (!record.ok()) return record.status();
    if (!is_terminal(record->state) || runtimes_.count(id)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", id, " is ", state_name(shown_state_locked(*record)),
          ": only an ended job is deleted (cancel it first: accumctl cancel ", id, ")"));
    }
    auto active = store_->list_active();
    if (!active.ok()) return active.status();
    for (const auto& other : *active) {
      // What its next attempt reads: a checkpoint path until it has one of its own, and
      // init_from likewise (a resume reads the checkpoint's weights instead).
      std::string from = attempt_resume_from(other.spec);
      if (from == "latest" && list_job_checkpoints(other.spec.checkpoint().dir()).empty()) {
        from = other.spec.init_from();
      }
      if (from != "latest" && !from.empty() && inside(from, record->job_dir)) {
        return absl::FailedPreconditionError(
            absl::StrCat("job ", other.id, " (", state_name(other.state), ") starts from ", id,
                         "'s ", from, " until it has written a checkpoint of its own; delete ", id,
                         " after that, or once ", other.id, " has ended"));
      }
    }
    if (fs::path(record->job_dir).lexically_normal() != (jobs / id).lexically_normal()) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", id, "'s folder ", record->job_dir, " is not ", (jobs / id).string(),
                       " (the state dir was moved?); not deleted: remove the folder by hand"));
    }
    deleted.job_dir = record->job_dir;
    std::error_code error;
    const bool has_folder = fs::exists(record->job_dir, error);
    if (has_folder) {
      fs::rename(record->job_dir, deleting, error);
      if (error) {
        return absl::UnavailableError(absl::StrCat("job ", id, ": cannot move ", record->job_dir,
                                                   " aside to delete it: ", error.message()));
      }
    }
    if (auto status = store_->remove(id); !status.ok()) {
      if (has_folder) fs::rename(deleting, record->job_dir, error);  // nothing was deleted
      return status;
    }
  }
  deleted.bytes_freed = bytes_under(deleting);
  std::error_code error;
  fs::remove_all(deleting, error);
  if (error) {
    spdlog::error("job {} deleted, but removing {} failed: {} (accumd retries at its next start)",
                  id, deleting.string(), error.message());
  }
  spdlog::info("job {} deleted: {} ({} bytes)", id, deleted.job_dir, deleted.bytes_freed);
  return deleted;
}

void JobManager::recover_deletes() {
  std::error_code error;
  const fs::path jobs = fs::path(config_.state_dir) / "jobs";
  std::vector<fs::path> found;
  for (const auto& entry : fs::directory_iterator(jobs, error)) {
    if (entry.path().filename().string().rfind(kDeletingPrefix, 0) == 0) {
      found.push_back(entry.path());
    }
  }
  for (const fs::path& path : found) {
    const std::string id = path.filename().string().substr(std::strlen(kDeletingPrefix));
    const auto record = store_->get(id);
    if (absl::IsNotFound(record.status())) {
      fs::remove_all(path, error);
      spdlog::info("job {}: finished removing the folder of an interrupted delete", id);
    } else if (record.ok() && !fs::exists(jobs / id, error)) {
      fs::rename(path, jobs / id, error);
      spdlog::warn("job {}: a delete was interrupted before its record went; folder put back", id);
    }
  }
}

}  // namespace accum::control
