// io/checkpoint_dir.cpp — atomic checkpoint directories, their verification,
// resolution ("latest" or a path) and keep-last-N retention.
//
// Crash safety rests on three facts: (1) a step directory only ever appears by
// rename of a fully written, fsynced temporary directory whose manifest.json was
// written last; (2) `latest` is replaced by rename of a fsynced temp file, so it
// always names a directory that was complete when it was written; (3) every
// temporary name starts with ".tmp-" and ends with "-<pid>", so leftovers of a
// dead writer are recognizable and removed by apply_retention(). Replacing an
// existing step directory uses renameat2(RENAME_EXCHANGE) (one atomic swap);
// on file systems without it, the old directory is renamed aside first.
#include "daemon/worker/io/checkpoint_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "daemon/worker/io/json.h"

namespace accum::io {
namespace fs = std::filesystem;
namespace {

constexpr char kManifest[] = "manifest.json";
constexpr char kLatest[] = "latest";
constexpr char kTmpPrefix[] = ".tmp-";

std::string join(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

absl::Status rename_error(const std::string& from, const std::string& to, int err) {
  return absl::InternalError(
      absl::StrCat("rename ", from, " -> ", to, " failed: ", std::strerror(err)));
}

// Renames `dir` to a temp name first (so it stops looking like a checkpoint at
// once), then deletes it.
void remove_dir_safely(const std::string& root, const std::string& dir) {
  std::string doomed = join(
      root, absl::StrCat(kTmpPrefix, "del-", fs::path(dir).filename().string(), "-", ::getpid()));
  std::error_code ec;
  if (::rename(dir.c_str(), doomed.c_str()) != 0) doomed = dir;
  fs::remove_all(doomed, ec);
}

// The pid a temp name ends with ("...-<pid>"), or -1.
int64_t temp_owner_pid(const std::string& name) {
  if (name.rfind(kTmpPrefix, 0) != 0) return -1;
  size_t dash = name.rfind('-');
  if (dash == std::string::npos || dash + 1 >= name.size()) return -1;
  int64_t pid = 0;
  for (size_t i = dash + 1; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    pid = pid * 10 + (name[i] - '0');
    if (pid > (1 << 30)) return -1;
  }
  return pid;
}

bool process_alive(int64_t pid) {
  if (pid <= 0) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

// Checks a step directory against its manifest; with `hashes` also the sha256
// of every file (expensive: reads every byte).
absl::Status check_checkpoint(const std::string& step_dir, bool hashes) {
  auto manifest = read_manifest(step_dir);
  if (!manifest.ok()) return manifest.status();
  std::error_code ec;
  for (const ManifestEntry& entry : manifest->files) {
    const std::string path = join(step_dir, entry.name);
    uintmax_t actual_size = fs::file_size(path, ec);
    if (ec)
      return absl::DataLossError(absl::StrCat("checkpoint ", step_dir, ": file ", entry.name,
                                              " (listed in ", kManifest, ") is missing"));
    if (static_cast<int64_t>(actual_size) != entry.size)
      return absl::DataLossError(absl::StrCat("checkpoint ", step_dir, ": file ", entry.name,
                                              " has ", actual_size, " bytes; ", kManifest, " says ",
                                              entry.size));
    if (!hashes) continue;
    auto digest = sha256_file(path);
    if (!digest.ok()) return digest.status();
    if (*digest != entry.sha256)
      return absl::DataLossError(absl::StrCat("checkpoint ", step_dir, ": file ", entry.name,
                                              " has sha256 ", *digest, "; ", kManifest, " says ",
                                              entry.sha256));
  }
  return absl::OkStatus();
}

// Publishes `contents` as root/name atomically: temp file, fsync, rename, fsync dir.
// On failure the temp file is removed (a full disk must not also leave litter behind).
absl::Status replace_file_atomically(const std::string& root, const std::string& name,
                                     const std::string& contents) {
  const std::string tmp = join(root, absl::StrCat(kTmpPrefix, name, "-", ::getpid()));
  const std::string target = join(root, name);
  absl::Status status = write_file_durable(tmp, contents);
  if (status.ok() && ::rename(tmp.c_str(), target.c_str()) != 0)
    status = rename_error(tmp, target, errno);
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return status;
  }
  return fsync_dir(root);
}

// The step directory `latest` names (its plain name), or "" when there is none.
std::string latest_name(const std::string& root) {
  auto text = read_file(join(root, kLatest));
  return text.ok() ? std::string(absl::StripAsciiWhitespace(*text)) : std::string();
}

// A folder under root that does not exist yet: `base`, else `base-2`, `base-3`, ...
constexpr std::string_view kAbandonedPrefix = "abandoned-by-";

// S of a folder CheckpointWriter::set_aside_later_steps() made: "abandoned-by-step_S" or
// "abandoned-by-step_S-<n>"; nullopt for any other name.
std::optional<int64_t> abandoning_step(std::string_view name) {
  if (name.substr(0, kAbandonedPrefix.size()) != kAbandonedPrefix) return std::nullopt;
  std::string_view step_dir = name.substr(kAbandonedPrefix.size());
  if (const size_t dash = step_dir.find('-'); dash != std::string_view::npos) {
    const std::string_view copy = step_dir.substr(dash + 1);
    if (copy.empty() || copy.find_first_not_of("0123456789") != std::string_view::npos)
      return std::nullopt;
    step_dir = step_dir.substr(0, dash);
  }
  return parse_step_dir_name(step_dir);
}

std::string unused_name(const std::string& root, const std::string& base) {
  std::error_code ec;
  std::string name = base;
  for (int n = 2; fs::exists(join(root, name), ec); ++n) name = absl::StrCat(base, "-", n);
  return name;
}

}  // namespace

std::string step_dir_name(int64_t step) { return absl::StrFormat("step_%08d", step); }

std::optional<int64_t> parse_step_dir_name(std::string_view name) {
  constexpr std::string_view kPrefix = "step_";
  if (name.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  std::string_view digits = name.substr(kPrefix.size());
  if (digits.size() < 8 || digits.size() > 18) return std::nullopt;
  int64_t step = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    step = step * 10 + (c - '0');
  }
  return step;
}

CheckpointWriter::CheckpointWriter(std::string root_dir, int64_t step)
    : root_(std::move(root_dir)),
      tmp_(join(root_, absl::StrCat(kTmpPrefix, step_dir_name(step), "-", ::getpid()))),
      final_(join(root_, step_dir_name(step))),
      step_(step) {}

CheckpointWriter::~CheckpointWriter() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(tmp_, ec);  // best effort: a leftover is removed later by apply_retention
}

absl::Status ensure_checkpoint_root(const std::string& root_dir) {
  std::error_code ec;
  fs::create_directories(root_dir, ec);
  if (fs::is_directory(root_dir)) {
    if (::access(root_dir.c_str(), W_OK | X_OK) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot write into ", root_dir, ": ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }
  // The nearest existing path at or above root_dir is what is in the way.
  for (fs::path at = fs::path(root_dir); !at.empty(); at = at.parent_path()) {
    std::error_code exists_ec;
    if (!fs::exists(fs::symlink_status(at, exists_ec)) || fs::is_directory(at, exists_ec)) {
      if (at == at.parent_path()) break;
      continue;
    }
    return absl::FailedPreconditionError(
        at == fs::path(root_dir)
            ? absl::StrCat(root_dir, " exists and is not a directory")
            : absl::StrCat(at.string(), " is not a directory, so nothing can be created under it"));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "cannot create ", root_dir, ": ", ec ? ec.message() : std::string("unknown error")));
}

absl::Status CheckpointWriter::begin() {
  if (step_ < 0)
    return absl::InvalidArgumentError(absl::StrCat("checkpoint step must be >= 0, got ", step_));
  std::error_code ec;
  fs::create_directories(root_, ec);
  if (ec)
    return absl::InternalError(
        absl::StrCat("cannot create checkpoint directory ", root_, ": ", ec.message()));
  fs::remove_all(tmp_, ec);  // a leftover of an earlier attempt by this same pid
  if (!fs::create_directory(tmp_, ec) || ec)
    return absl::InternalError(absl::StrCat("cannot create ", tmp_, ": ", ec.message()));
  committed_ = false;
  return absl::OkStatus();
}

const std::string& CheckpointWriter::path() const { return tmp_; }

absl::StatusOr<std::string> CheckpointWriter::commit() {
  if (committed_) return absl::FailedPreconditionError(absl::StrCat(final_, " already committed"));
  std::error_code ec;
  if (!fs::is_directory(tmp_, ec))
    return absl::FailedPreconditionError(
        absl::StrCat("commit without begin(): ", tmp_, " does not exist"));
  std::vector<std::string> names;
  for (const fs::directory_entry& entry : fs::directory_iterator(tmp_, ec)) {
    std::string name = entry.path().filename().string();
    if (name == kManifest) continue;
    if (!entry.is_regular_file())
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint ", tmp_, ": ", name, " is not a regular file"));
    names.push_back(name);
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", tmp_, ": ", ec.message()));
  std::sort(names.begin(), names.end());

  // manifest.json = {"step": s, "files": [{"name", "size", "sha256"}, ...]}
  Json files = Json::array();
  for (const std::string& name : names) {
    const std::string path = join(tmp_, name);
    auto contents_fsync = [&]() -> absl::Status {  // the writer may not have fsynced
      int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return absl::InternalError(absl::StrCat(path, ": open failed"));
      int rc = ::fsync(fd);
      ::close(fd);
      if (rc != 0) return absl::InternalError(absl::StrCat(path, ": fsync failed"));
      return absl::OkStatus();
    };
    if (absl::Status s = contents_fsync(); !s.ok()) return s;
    auto digest = sha256_file(path);
    if (!digest.ok()) return digest.status();
    Json entry = Json::object();
    entry.set("name", name);
    entry.set("size", static_cast<int64_t>(fs::file_size(path)));
    entry.set("sha256", *digest);
    files.push_back(std::move(entry));
  }
  Json manifest = Json::object();
  manifest.set("step", step_);
  manifest.set("files", std::move(files));
  if (absl::Status s = write_file_durable(join(tmp_, kManifest), manifest.dump(2) + "\n"); !s.ok())
    return s;
  if (absl::Status s = fsync_dir(tmp_); !s.ok()) return s;

  if (absl::Status s = set_aside_later_steps(); !s.ok()) return s;
  if (!fs::exists(final_, ec)) {
    if (::rename(tmp_.c_str(), final_.c_str()) != 0) return rename_error(tmp_, final_, errno);
  } else if (::renameat2(AT_FDCWD, tmp_.c_str(), AT_FDCWD, final_.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(tmp_, ec);  // tmp_ now holds the old directory
  } else {
    // No atomic exchange here: move the old one aside, the new one in, drop the old.
    const std::string aside =
        join(root_, absl::StrCat(kTmpPrefix, "old-", step_dir_name(step_), "-", ::getpid()));
    if (::rename(final_.c_str(), aside.c_str()) != 0) return rename_error(final_, aside, errno);
    if (::rename(tmp_.c_str(), final_.c_str()) != 0) return rename_error(tmp_, final_, errno);
    fs::remove_all(aside, ec);
  }
  committed_ = true;
  // From here on the checkpoint is complete: a failure only leaves `latest` behind, which
  // resolve_checkpoint() tolerates (the newest verified step directory wins), so the
  // error must say so rather than suggest the checkpoint was lost.
  const std::string previous = latest_name(root_);
  absl::Status status = fsync_dir(root_);
  if (status.ok()) status = replace_file_atomically(root_, kLatest, step_dir_name(step_) + "\n");
  if (!status.ok()) {
    return absl::Status(
        status.code(),
        absl::StrCat("checkpoint step ", step_, " is complete in ", final_,
                     " but `latest` could not be updated",
                     absl::IsResourceExhausted(status) ? " (disk full)" : "", "; it still names ",
                     previous.empty() ? std::string("nothing") : previous,
                     ", and a resume from \"latest\" takes the newer complete ", final_,
                     " anyway: ", status.message()));
  }
  return final_;
}

// Step directories above the step being committed belong to a timeline this run left:
// it resumed from an older checkpoint (or started afresh) in a folder that already held
// newer ones. Left in place, they would count as the newest for retention (which would
// then delete this run's own checkpoints, the one it resumed from first) and for a resume
// from "latest". They are moved, whole and untouched, into <root>/abandoned-by-step_S/
// (S this step; -2, -3... if taken), where no reader looks, so nothing is lost and the
// user can inspect or delete them. This runs before the new directory appears and before
// `latest` moves: a crash in between leaves `latest` naming a moved directory, and
// resolve_checkpoint() then falls back to the newest verified one left, which is of this
// run's timeline.
absl::Status CheckpointWriter::set_aside_later_steps() {
  std::error_code ec;
  std::vector<std::pair<int64_t, std::string>> later;
  for (const fs::directory_entry& entry : fs::directory_iterator(root_, ec)) {
    const std::string name = entry.path().filename().string();
    std::optional<int64_t> step = parse_step_dir_name(name);
    if (step && *step > step_ && entry.is_directory(ec)) later.emplace_back(*step, name);
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", root_, ": ", ec.message()));
  if (later.empty()) return absl::OkStatus();
  std::sort(later.begin(), later.end());
  const std::string folder =
      unused_name(root_, std::string(kAbandonedPrefix) + step_dir_name(step_));
  const std::string folder_path = join(root_, folder);
  if (absl::Status s = create_directories_durable(folder_path); !s.ok()) return s;
  std::string moved;
  for (const auto& [step, name] : later) {
    const std::string from = join(root_, name), to = join(folder_path, name);
    if (::rename(from.c_str(), to.c_str()) != 0) return rename_error(from, to, errno);
    absl::StrAppend(&moved, moved.empty() ? "" : ", ", name);
  }
  if (absl::Status s = fsync_dir(folder_path); !s.ok()) return s;
  if (absl::Status s = fsync_dir(root_); !s.ok()) return s;
  set_aside_note_ =
      absl::StrCat("checkpoint step ", step_, " goes back before ", moved, " in ", root_,
                   " (a run resumed from an older step there): ", "moved them into ", folder_path,
                   " so they are never taken for this run's newest; with checkpoint.keep_last N, "
                   "retention deletes that folder with step ",
                   step_,
                   " (once N newer checkpoints exist); delete it sooner when they are no longer "
                   "needed");
  return absl::OkStatus();
}

const ManifestEntry* CheckpointManifest::find(std::string_view name) const {
  for (const ManifestEntry& entry : files) {
    if (entry.name == name) return &entry;
  }
  return nullptr;
}

absl::StatusOr<CheckpointManifest> read_manifest(const std::string& step_dir) {
  std::error_code ec;
  if (!fs::is_directory(step_dir, ec)) {
    if (fs::exists(step_dir, ec))
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint ", step_dir,
                       " is not a directory; expected a checkpoint step directory "
                       "(.../step_00000100) holding manifest.json"));
    return absl::NotFoundError(absl::StrCat("checkpoint ", step_dir, " does not exist"));
  }
  const std::string manifest_path = join(step_dir, kManifest);
  auto text = read_file(manifest_path);
  if (!text.ok())
    return absl::DataLossError(absl::StrCat("checkpoint ", step_dir, " is incomplete: ", kManifest,
                                            " is missing or unreadable (", text.status().message(),
                                            ")"));
  auto bad_manifest = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat("checkpoint ", step_dir, ": ", kManifest, " ", what));
  };
  auto json = parse_json(*text);
  if (!json.ok()) return bad_manifest(absl::StrCat("is not valid JSON: ", json.status().message()));
  const Json* step = json->find("step");
  const Json* files = json->find("files");
  if (step == nullptr || !step->is_int()) return bad_manifest("has no integer \"step\"");
  if (files == nullptr || !files->is_array()) return bad_manifest("has no array \"files\"");
  std::optional<int64_t> dir_step = parse_step_dir_name(fs::path(step_dir).filename().string());
  if (dir_step && *dir_step != step->as_int())
    return bad_manifest(
        absl::StrCat("says step ", step->as_int(), " but the directory is step ", *dir_step));
  CheckpointManifest manifest;
  manifest.step = step->as_int();
  for (const Json& entry : files->as_array()) {
    const Json* name = entry.find("name");
    const Json* size = entry.find("size");
    const Json* sha = entry.find("sha256");
    if (name == nullptr || !name->is_string() || size == nullptr || !size->is_int() ||
        sha == nullptr || !sha->is_string())
      return bad_manifest(
          "has a file entry without string \"name\", integer \"size\" and "
          "string \"sha256\"");
    const std::string& file = name->as_string();
    if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..")
      return bad_manifest(absl::StrCat("lists an invalid file name '", file, "'"));
    manifest.files.push_back({file, size->as_int(), sha->as_string()});
  }
  return manifest;
}

bool has_checkpoint_traces(const std::string& root_dir) {
  std::error_code ec;
  if (fs::exists(join(root_dir, kLatest), ec)) return true;
  for (const fs::directory_entry& entry : fs::directory_iterator(root_dir, ec)) {
    if (parse_step_dir_name(entry.path().filename().string())) return true;
  }
  return false;
}

absl::Status verify_checkpoint(const std::string& step_dir) {
  return check_checkpoint(step_dir, /*hashes=*/true);
}

absl::Status check_checkpoint_complete(const std::string& step_dir) {
  return check_checkpoint(step_dir, /*hashes=*/false);
}

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& root_dir) {
  std::vector<std::pair<int64_t, std::string>> result;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(root_dir, ec)) {
    std::optional<int64_t> step = parse_step_dir_name(entry.path().filename().string());
    if (!step || !entry.is_directory()) continue;
    if (check_checkpoint(entry.path().string(), /*hashes=*/false).ok())
      result.emplace_back(*step, entry.path().string());
  }
  std::sort(result.begin(), result.end());
  return result;
}

absl::StatusOr<std::string> resolve_checkpoint(const std::string& root_dir,
                                               const std::string& resume_from,
                                               std::string* passed_over,
                                               std::string* stale_latest) {
  if (passed_over != nullptr) passed_over->clear();
  if (stale_latest != nullptr) stale_latest->clear();
  if (resume_from.empty())
    return absl::InvalidArgumentError(
        "checkpoint.resume_from is empty; expected \"latest\" or a "
        "checkpoint directory");
  if (resume_from != "latest") {
    std::string path = resume_from;
    std::error_code ec;
    if (fs::path(path).is_relative() && !fs::exists(path, ec)) path = join(root_dir, resume_from);
    if (absl::Status s = verify_checkpoint(path); !s.ok()) return s;
    return path;
  }
  // `latest`'s checkpoint, when it verifies; its step bounds what counts as newer.
  std::string latest_problem, latest_path;
  int64_t latest_step = -1;
  auto latest = read_file(join(root_dir, kLatest));
  if (latest.ok()) {
    std::string name(absl::StripAsciiWhitespace(*latest));
    if (name.empty() || name.find('/') != std::string::npos) {
      latest_problem = absl::StrCat(join(root_dir, kLatest), " names '", name, "'");
    } else if (absl::Status s = verify_checkpoint(join(root_dir, name)); !s.ok()) {
      latest_problem = std::string(s.message());
    } else if (auto manifest = read_manifest(join(root_dir, name)); manifest.ok()) {
      latest_path = join(root_dir, name);
      latest_step = manifest->step;
    }
  }
  // A step directory newer than `latest`'s wins when it verifies: it was committed and
  // then `latest` could not be moved (a full disk, a crash in between). Directories of a
  // timeline a run went back from are never here to win: CheckpointWriter::commit() moves
  // them aside before it publishes the older step. Without a usable `latest`, this is the
  // fall back to the newest checkpoint that verifies, noting what was passed over.
  std::string skipped = latest_problem;
  auto all = list_checkpoints(root_dir);
  for (auto it = all.rbegin(); it != all.rend() && it->first > latest_step; ++it) {
    absl::Status s = verify_checkpoint(it->second);
    if (s.ok()) {
      if (passed_over != nullptr) *passed_over = skipped;
      if (stale_latest != nullptr && !latest_path.empty()) {
        *stale_latest =
            absl::StrCat(join(root_dir, kLatest), " names ", latest_path, " but ", it->second,
                         " is newer and complete (`latest` was not updated after "
                         "it was written)");
      }
      return it->second;
    }
    if (skipped.find(it->second) == std::string::npos) {  // not the one latest named
      absl::StrAppend(&skipped, skipped.empty() ? "" : "; ", s.message());
    }
  }
  if (!latest_path.empty()) {
    if (passed_over != nullptr) *passed_over = skipped;
    return latest_path;
  }
  return absl::NotFoundError(absl::StrCat(
      "no complete checkpoint under ", root_dir,
      latest_problem.empty() ? std::string() : absl::StrCat(" (latest: ", latest_problem, ")")));
}

absl::Status apply_retention(const std::string& root_dir, int keep_last) {
  if (keep_last < 0)
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint.keep_last must be >= 0, got ", keep_last));
  std::error_code ec;
  // Leftovers of writers that died: ".tmp-...-<pid>" whose pid is gone.
  std::vector<fs::path> stale;
  for (const fs::directory_entry& entry : fs::directory_iterator(root_dir, ec)) {
    int64_t pid = temp_owner_pid(entry.path().filename().string());
    if (pid > 0 && !process_alive(pid)) stale.push_back(entry.path());
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", root_dir, ": ", ec.message()));
  for (const fs::path& path : stale) fs::remove_all(path, ec);
  if (keep_last == 0) return absl::OkStatus();

  std::string latest_name;
  if (auto latest = read_file(join(root_dir, kLatest)); latest.ok())
    latest_name = std::string(absl::StripAsciiWhitespace(*latest));
  auto all = list_checkpoints(root_dir);
  const size_t keep = static_cast<size_t>(keep_last);
  std::optional<int64_t> oldest_kept;
  for (size_t i = 0; i < all.size(); ++i) {
    // all[i] is older than the newest `keep` when i + keep < all.size().
    if (i + keep >= all.size() || fs::path(all[i].second).filename() == latest_name) {
      if (!oldest_kept) oldest_kept = all[i].first;
      continue;
    }
    remove_dir_safely(root_dir, all[i].second);
  }
  // A timeline set aside by step S goes with step S: once every kept checkpoint is newer
  // than S, this run has written keep_last checkpoints since it left that timeline.
  if (oldest_kept) {
    std::vector<std::string> abandoned;
    for (const fs::directory_entry& entry : fs::directory_iterator(root_dir, ec)) {
      const std::string name = entry.path().filename().string();
      const std::optional<int64_t> step = abandoning_step(name);
      if (step && *step < *oldest_kept && entry.is_directory(ec)) abandoned.push_back(name);
    }
    if (ec) return absl::InternalError(absl::StrCat("cannot list ", root_dir, ": ", ec.message()));
    for (const std::string& name : abandoned) remove_dir_safely(root_dir, join(root_dir, name));
  }
  return fsync_dir(root_dir);
}

}  // namespace accum::io
