// control/resume_point.cpp — validating a user's resume_from and choosing each
// attempt's.
#include "daemon/control/resume_point.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "daemon/control/job_files.h"
#include "daemon/spec/spec.h"
#include "daemon/worker/io/checkpoint_dir.h"
#include "daemon/worker/io/safetensors.h"
#include "google/protobuf/util/json_util.h"

namespace accum::control {
namespace fs = std::filesystem;

namespace {

absl::Status invalid(const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat("checkpoint.resume_from: ", message));
}

}  // namespace

bool resumes_from_path(const accum::v1::JobSpec& spec) {
  const std::string& resume_from = spec.checkpoint().resume_from();
  return !resume_from.empty() && resume_from != "latest";
}

absl::Status check_init_from(const accum::v1::JobSpec& spec) {
  if (spec.init_from().empty()) return absl::OkStatus();
  // The header only (pread of its bytes, the data left unread): a text file, a truncated
  // download or an HTML error page saved under the name is refused here, not by the
  // worker's first attempt.
  auto file = io::SafetensorsReader::open(spec.init_from());
  if (!file.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("init_from: ", file.status().message(),
                                                   "; expected GPT-2 weights in safetensors"));
  }
  return absl::OkStatus();
}

absl::Status check_resume_from(const accum::v1::JobSpec& spec) {
  if (!resumes_from_path(spec)) return absl::OkStatus();
  const std::string& path = spec.checkpoint().resume_from();
  constexpr char kExpected[] =
      "; expected a checkpoint step directory (.../checkpoints/step_00000100) or \"latest\"";
  std::error_code error;
  if (!fs::exists(path, error))
    return invalid(absl::StrCat("'", path, "' does not exist", kExpected));
  if (!fs::is_directory(path, error)) {
    return invalid(absl::StrCat("'", path, "' is not a directory", kExpected));
  }
  if (!fs::exists(fs::path(path) / "manifest.json", error)) {
    // A job's checkpoint folder rather than one of its checkpoints: name the newest.
    const auto inside = list_job_checkpoints(path);
    if (!inside.empty()) {
      return invalid(absl::StrCat("'", path, "' holds checkpoints; expected one of its step ",
                                  "directories, e.g. the newest: '", inside.back().path(), "'"));
    }
  }
  if (auto status = io::check_checkpoint_complete(path); !status.ok()) {
    return invalid(std::string(status.message()));
  }
  const std::string state_path = (fs::path(path) / "state.json").string();
  auto state_json = io::read_file(state_path);
  if (!state_json.ok()) return invalid(std::string(state_json.status().message()));
  accum::v1::CheckpointState state;
  if (auto status = google::protobuf::util::JsonStringToMessage(*state_json, &state);
      !status.ok()) {
    return invalid(
        absl::StrCat(state_path, ": not a checkpoint state: ", status.message().as_string()));
  }
  if (auto status = spec::check_resume_compatible(state.spec(), spec); !status.ok()) {
    return invalid(absl::StrCat("'", path, "': ", status.message()));
  }
  return absl::OkStatus();
}

std::string attempt_resume_from(const accum::v1::JobSpec& spec) {
  if (!resumes_from_path(spec) || !list_job_checkpoints(spec.checkpoint().dir()).empty()) {
    return "latest";
  }
  return spec.checkpoint().resume_from();
}

}  // namespace accum::control
