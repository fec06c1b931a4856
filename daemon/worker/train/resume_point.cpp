#include "daemon/worker/train/resume_point.h"

#include <spdlog/spdlog.h>

#include <cstdint>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "daemon/worker/comm/rank_messages.h"
#include "daemon/worker/io/checkpoint_dir.h"

namespace accum::train {
namespace {

using accum::v1::CheckpointSpec;

// This rank's answer to checkpoint.resume_from: the step directory, "" for a fresh start,
// or why it cannot resume.
absl::StatusOr<std::string> resolve_on_this_rank(const CheckpointSpec& ckpt) {
  if (ckpt.resume_from().empty()) return std::string();
  std::string passed_over, stale_latest;
  auto resolved =
      io::resolve_checkpoint(ckpt.dir(), ckpt.resume_from(), &passed_over, &stale_latest);
  if (!resolved.ok()) {
    if (ckpt.resume_from() != "latest") return resolved.status();
    if (!io::has_checkpoint_traces(ckpt.dir())) return std::string();  // nothing saved yet
    return absl::Status(resolved.status().code(),
                        absl::StrCat("checkpoint.resume_from \"latest\": ", ckpt.dir(),
                                     " holds checkpoints but none of them can be read, so "
                                     "training will not start over from step 0: ",
                                     resolved.status().message()));
  }
  if (!passed_over.empty()) {  // a damaged newer checkpoint: say so, do not hide it
    spdlog::warn("not resuming from a newer checkpoint: {}; resuming from {} instead", passed_over,
                 *resolved);
  }
  if (!stale_latest.empty()) {  // a complete checkpoint is never ignored for a stale pointer
    spdlog::warn("{}: resuming from {}", stale_latest, *resolved);
  }
  return *resolved;
}

// What a rank resolved, as numbers every rank can compare: kind, step and the first 48
// bits of model.safetensors' sha256 (two checkpoints of one step from different runs
// differ there).
struct ResumePoint {
  enum Kind : int64_t { kFresh = 0, kCheckpoint = 1, kFailed = 2 };
  int64_t kind = kFresh, step = -1, weights_fingerprint = 0;
  bool operator==(const ResumePoint& other) const {
    return kind == other.kind && step == other.step &&
           weights_fingerprint == other.weights_fingerprint;
  }
  std::string describe() const {
    switch (kind) {
      case kFresh:
        return "no checkpoint (a fresh start)";
      case kCheckpoint:
        return absl::StrFormat("%s (weights sha256 %012x...)", io::step_dir_name(step),
                               weights_fingerprint);
      default:
        return "could not resolve it";
    }
  }
};

ResumePoint resume_point_of(const absl::StatusOr<std::string>& resolved) {
  ResumePoint point;
  if (!resolved.ok()) {
    point.kind = ResumePoint::kFailed;
    return point;
  }
  if (resolved->empty()) return point;
  point.kind = ResumePoint::kCheckpoint;
  auto manifest = io::read_manifest(*resolved);  // verified by resolve_checkpoint
  if (!manifest.ok()) {
    point.kind = ResumePoint::kFailed;
    return point;
  }
  point.step = manifest->step;
  if (const io::ManifestEntry* model = manifest->find("model.safetensors")) {
    uint64_t bits = 0;
    if (absl::SimpleHexAtoi(absl::string_view(model->sha256).substr(0, 12), &bits)) {
      point.weights_fingerprint = static_cast<int64_t>(bits);
    }
  }
  return point;
}

}  // namespace

absl::StatusOr<std::string> resolve_resume_checkpoint(comm::Communicator* comm,
                                                      const CheckpointSpec& ckpt) {
  const absl::StatusOr<std::string> resolved = resolve_on_this_rank(ckpt);
  const int world = comm->world_size();
  const ResumePoint mine = resume_point_of(resolved);
  // Every rank's three numbers (an all_reduce, which every back end takes on host memory;
  // NCCL's all_gather needs device buffers).
  const std::vector<int64_t> points =
      comm::all_gather_int64(comm, {mine.kind, mine.step, mine.weights_fingerprint});
  std::vector<ResumePoint> ranks(world);
  bool all_equal = true;
  for (int r = 0; r < world; ++r) {
    ranks[r] = {points[3 * r], points[3 * r + 1], points[3 * r + 2]};
    all_equal = all_equal && ranks[r] == ranks[0];
  }
  if (!resolved.ok() || all_equal) return resolved;
  // Ranks that resolved alike are named together ("ranks 0-7: step_00000300 ..."), and the
  // message names no rank of its own: the ranks' agreement on failing (failure_agreement.h)
  // then prints it once per folder that was resolved, with the ranks that resolved there,
  // not once per rank.
  std::vector<std::string> described(world);
  for (int r = 0; r < world; ++r) described[r] = ranks[r].describe();
  std::string each;
  for (const comm::RankGroup& group : comm::group_by_message(described)) {
    absl::StrAppend(&each, each.empty() ? "" : ", ", comm::describe_ranks(group.ranks), ": ",
                    group.message);
  }
  return absl::FailedPreconditionError(
      absl::StrCat("the ranks resolved checkpoint.resume_from \"", ckpt.resume_from(),
                   "\" to different checkpoints (", each, "; here it resolved to ",
                   resolved->empty() ? std::string("none under ") + ckpt.dir() : *resolved,
                   "); every rank must resume from the same checkpoint: give them one shared "
                   "checkpoint.dir, or the same checkpoint in each"));
}

}  // namespace accum::train
