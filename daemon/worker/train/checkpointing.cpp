#include "daemon/worker/train/checkpointing.h"

#include <google/protobuf/util/json_util.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "daemon/spec/spec.h"
#include "daemon/worker/io/checkpoint_dir.h"
#include "daemon/worker/io/finite_values.h"
#include "daemon/worker/io/safetensors.h"
#include "daemon/worker/model/gpt2_hf.h"
#include "kernels/host_staging.h"

namespace accum::train {
namespace {

namespace fs = std::filesystem;
using accum::v1::CheckpointState;

std::string ranges_to_string(const std::vector<comm::Range>& ranges) {
  std::string out;
  for (const auto& [begin, end] : ranges)
    absl::StrAppend(&out, out.empty() ? "" : ",", begin, ":", end);
  return out;
}

absl::StatusOr<std::vector<comm::Range>> ranges_from_string(const std::string& text,
                                                            const std::string& file) {
  std::vector<comm::Range> ranges;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::vector<absl::string_view> ends = absl::StrSplit(part, ':');
    uint64_t begin = 0, end = 0;
    if (ends.size() != 2 || !absl::SimpleAtoi(ends[0], &begin) ||
        !absl::SimpleAtoi(ends[1], &end) || end < begin) {
      return absl::DataLossError(absl::StrCat(file, ": bad \"ranges\" metadata \"", text, "\""));
    }
    ranges.emplace_back(begin, end);
  }
  return ranges;
}

std::string optimizer_file_name(int rank, int world, bool sharded) {
  if (!sharded) return "optimizer.safetensors";
  return absl::StrFormat("optimizer-rank%05d-of-%05d.safetensors", rank, world);
}

// What the reader relies on in state.json beyond the spec: fields that, wrong, would make
// a resume go on silently from the wrong place (the manifest's sha256 of state.json only
// proves it was written so, not that its writer wrote sense).
absl::Status check_state(const std::string& step_dir, const CheckpointState& state) {
  const std::string where = step_dir + "/state.json";
  if (state.format_version() != kCheckpointFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat(where, ": format_version is ", state.format_version(), "; this worker reads ",
                     "format_version ", kCheckpointFormatVersion));
  }
  if (state.tokens_per_update() <= 0) {
    return absl::DataLossError(absl::StrCat(where, ": tokens_per_update is ",
                                            state.tokens_per_update(), "; expected > 0"));
  }
  if (state.step() < 0) {  // it would train "steps" below 0 with a negative learning rate
    return absl::DataLossError(absl::StrCat(where, ": step is ", state.step(), "; expected >= 0"));
  }
  auto manifest = io::read_manifest(step_dir);
  if (!manifest.ok()) return manifest.status();
  if (state.step() != manifest->step) {
    return absl::DataLossError(absl::StrCat(where, ": step is ", state.step(), "; expected ",
                                            manifest->step,
                                            ", the step of manifest.json and of the directory"));
  }
  if (state.has_updates_applied() &&
      (state.updates_applied() < 0 || state.updates_applied() > state.step())) {
    return absl::DataLossError(absl::StrCat(where, ": updates_applied is ", state.updates_applied(),
                                            "; expected 0 to step (", state.step(), ")"));
  }
  for (const std::string& name : state.optimizer_files()) {
    // read_manifest admits plain file names only, so a listed name cannot leave the folder.
    if (manifest->find(name) == nullptr) {
      return absl::DataLossError(
          absl::StrCat(where, ": optimizer_files names \"", name,
                       "\"; expected a file of the checkpoint listed in manifest.json"));
    }
  }
  // The optimizer files the format requires of the writer's ranks: one, or one per rank
  // under ZeRO-1. Each must be named in state.json (and so, above, listed in the manifest).
  if (state.world_size() < 1) {
    return absl::DataLossError(
        absl::StrCat(where, ": world_size is ", state.world_size(), "; expected >= 1"));
  }
  const bool sharded = state.zero_stage() > 0 && state.world_size() > 1;
  for (int r = 0; r < (sharded ? state.world_size() : 1); ++r) {
    const std::string required = optimizer_file_name(r, state.world_size(), sharded);
    if (std::find(state.optimizer_files().begin(), state.optimizer_files().end(), required) ==
        state.optimizer_files().end()) {
      return absl::DataLossError(absl::StrCat(
          where, ": optimizer_files does not name ", required, "; a checkpoint written by ",
          state.world_size(), " ranks at ZeRO stage ", state.zero_stage(), " has it"));
    }
  }
  return absl::OkStatus();
}

// model.safetensors and state.json must be listed in manifest.json: verify_checkpoint()
// checks only what the manifest lists, so an unlisted file would be read unverified.
absl::Status check_manifest_lists_required_files(const std::string& step_dir) {
  auto manifest = io::read_manifest(step_dir);
  if (!manifest.ok()) return manifest.status();
  for (const char* required : {"model.safetensors", "state.json"}) {
    if (manifest->find(required) == nullptr) {
      return absl::DataLossError(absl::StrCat(
          step_dir, "/manifest.json does not list ", required,
          "; expected every file of the checkpoint (model.safetensors, state.json and the "
          "optimizer files) listed with its size and sha256, so that it is verified"));
    }
  }
  return absl::OkStatus();
}

// A piece of Adam's moments in host memory: `n` values from element `first` of exp_avg
// (second == false) or exp_avg_sq, valid until the next call.
using MomentPiece =
    std::function<absl::StatusOr<const float*>(bool second, size_t first, size_t n)>;

// Adam's moments (`count` values each) as a reader may trust them: finite, and a second
// moment that is a mean of squares, so never negative (its square root divides the update).
// INVALID_ARGUMENT names the file, the tensor and the first element that is not (a value that
// is not finite first). Read a piece at a time.
absl::Status check_moments(const std::string& path, size_t count, const MomentPiece& piece) {
  std::optional<std::pair<size_t, float>> negative;  // in exp_avg_sq
  for (const bool second : {false, true}) {
    const char* name = second ? "exp_avg_sq" : "exp_avg";
    for (size_t first = 0; first < count; first += kernels::HostStaging::kPieceFloats) {
      const size_t n = std::min(count - first, kernels::HostStaging::kPieceFloats);
      auto values = piece(second, first, n);
      if (!values.ok()) return values.status();
      if (auto bad = io::first_non_finite(*values, n)) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": tensor ", name, " holds ", io::value_name((*values)[*bad]), " at element ",
            first + *bad, " of ", count, "; expected finite optimizer moments"));
      }
      if (second && !negative) {
        const float* end = *values + n;
        const float* below = std::find_if(*values, end, [](float v) { return v < 0; });
        if (below != end) negative = {{first + (below - *values), *below}};
      }
    }
  }
  if (negative) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": tensor exp_avg_sq holds ", io::value_name(negative->second),
                     " at element ", negative->first, " of ", count,
                     "; expected >= 0 (Adam's second moment is a running mean of squared "
                     "gradients)"));
  }
  return absl::OkStatus();
}

constexpr const char* kDivergedAdvice =
    "lower optimizer.lr, raise optimizer.eps or set optimizer.grad_clip, then resume from the "
    "last checkpoint";

// The master weights of `step` about to be saved: INVALID_ARGUMENT naming the tensor and the
// element when one is not finite (the update of that step diverged).
absl::Status check_weights_finite(model::Gpt2* model, kernels::HostStaging& staging, int64_t step) {
  for (const auto& tensor : model->tensors()) {
    for (size_t first = 0; first < tensor.numel; first += kernels::HostStaging::kPieceFloats) {
      const size_t n = std::min(tensor.numel - first, kernels::HostStaging::kPieceFloats);
      const float* data = staging.read(model->params() + tensor.offset + first, n);
      if (auto bad = io::first_non_finite(data, n)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "step ", step, "'s update left weights that are not finite (tensor ", tensor.name,
            " holds ", io::value_name(data[*bad]), " at element ", first + *bad, " of ",
            tensor.numel, "): training diverged; ", kDivergedAdvice));
      }
    }
  }
  return absl::OkStatus();
}

// 1.0 when ok, 0.0 when not: all ranks learn whether every rank succeeded.
bool all_ok(comm::Communicator* comm, bool ok) {
  double flag = ok ? 0.0 : 1.0;
  comm->all_reduce(&flag, 1, {comm::ReduceOp::kSum, comm::DataType::kFloat64});
  return flag == 0.0;
}

// save_checkpoint() without the explanation of a failure: `writer` is rank 0's.
absl::StatusOr<std::string> write_checkpoint(comm::Communicator* comm, model::Gpt2* model,
                                             const AdamW& optimizer, const CheckpointState& state,
                                             const std::string& root_dir, int keep_last,
                                             io::CheckpointWriter& writer) {
  const int rank = comm->rank(), world = comm->world_size();
  const bool sharded = state.zero_stage() > 0 && world > 1;
  const bool writes_optimizer = sharded || rank == 0;
  // What this rank writes, checked before anything is on disk: weights or moments that are
  // not finite (a diverged update) would make a checkpoint that looks complete, that `latest`
  // names and that retention keeps in place of the last good one. Read (and later written) a
  // piece at a time: the host never holds a copy of them.
  kernels::HostStaging staging(model->backend());
  const auto staged = [&staging](const float* device, size_t count) {
    return staging.read(device, count);
  };
  const size_t moments = optimizer.owned_count();
  absl::Status finite = absl::OkStatus();
  if (rank == 0) finite = check_weights_finite(model, staging, state.step());
  if (finite.ok() && writes_optimizer) {
    finite = check_moments(
        optimizer_file_name(rank, world, sharded), moments,
        [&](bool second, size_t first, size_t n) -> absl::StatusOr<const float*> {
          return staging.read((second ? optimizer.exp_avg_sq() : optimizer.exp_avg()) + first, n);
        });
    if (!finite.ok()) {
      finite = absl::InvalidArgumentError(absl::StrCat(
          "step ", state.step(), "'s update left optimizer moments that are not finite (",
          finite.message(), "): training diverged; ", kDivergedAdvice));
    }
  }
  // Every rank refuses alike, so the job ends with this error's exit code whichever rank
  // ends it first.
  if (!all_ok(comm, finite.ok())) {
    return finite.ok() ? absl::InvalidArgumentError(absl::StrCat(
                             "step ", state.step(),
                             ": another rank found weights or optimizer moments that are not "
                             "finite: training diverged; ",
                             kDivergedAdvice))
                       : finite;
  }

  // Rank 0 creates the temporary directory; everyone learns its name from rank 0's pid.
  absl::Status status = absl::OkStatus();
  double pid = 0;
  if (rank == 0) {
    status = writer.begin();
    pid = static_cast<double>(getpid());
  }
  comm->broadcast(&pid, 1, comm::DataType::kFloat64, 0);
  if (!all_ok(comm, status.ok())) {
    return status.ok() ? absl::InternalError("checkpoint: another rank failed to begin") : status;
  }
  const std::string tmp_dir =
      rank == 0 ? writer.path()
                : absl::StrFormat("%s/.tmp-%s-%d", root_dir, io::step_dir_name(state.step()),
                                  static_cast<int>(pid));

  CheckpointState full_state = state;
  for (int r = 0; r < (sharded ? world : 1); ++r) {
    full_state.add_optimizer_files(optimizer_file_name(r, world, sharded));
  }
  if (rank == 0) {
    std::vector<io::TensorView> views;
    for (const auto& tensor : model->tensors()) {
      views.push_back({tensor.name, tensor.shape, model->params() + tensor.offset});
    }
    status = io::write_safetensors(tmp_dir + "/model.safetensors", views,
                                   {{"format", "pt"}, {"producer", "accumd"}}, staged);
    if (status.ok()) {
      std::string json;
      google::protobuf::util::JsonPrintOptions options;
      options.preserve_proto_field_names = true;
      options.add_whitespace = true;
      (void)google::protobuf::util::MessageToJsonString(full_state, &json, options);
      status = io::write_file_durable(tmp_dir + "/state.json", json);
    }
  }
  if (status.ok() && writes_optimizer) {
    const int64_t count = static_cast<int64_t>(moments);
    status = io::write_safetensors(tmp_dir + "/" + optimizer_file_name(rank, world, sharded),
                                   {{"exp_avg", {count}, optimizer.exp_avg()},
                                    {"exp_avg_sq", {count}, optimizer.exp_avg_sq()}},
                                   {{"ranges", ranges_to_string(optimizer.owned())},
                                    {"step", absl::StrCat(state.step())},
                                    {"num_params", absl::StrCat(model->num_params())}},
                                   staged);
  }
  if (!all_ok(comm, status.ok())) {
    return status.ok() ? absl::InternalError("checkpoint: another rank failed to write its files")
                       : status;
  }
  absl::StatusOr<std::string> final_dir = std::string();
  if (rank == 0) {
    final_dir = writer.commit();
    if (!writer.set_aside_note().empty()) spdlog::warn("{}", writer.set_aside_note());
    if (final_dir.ok()) status = io::apply_retention(root_dir, keep_last);
    if (!final_dir.ok()) status = final_dir.status();
  }
  if (!all_ok(comm, status.ok())) {
    return status.ok() ? absl::InternalError("checkpoint: rank 0 failed to commit") : status;
  }
  return fs::path(root_dir) / io::step_dir_name(state.step());
}

// This rank's moments, its owned ranges one after the other, filled from every optimizer
// file one file at a time and a piece at a time: a rank holds neither the full fp32 moments
// of a large model (they would not fit every rank's memory) nor a host copy of its own.
// Each file is checked whole before any of it is loaded.
absl::Status load_moments(const std::string& step_dir, const CheckpointState& state,
                          const model::Gpt2* model, AdamW* optimizer) {
  const size_t n = model->num_params();
  struct Owned {
    size_t begin, end, offset;  // parameters [begin, end) at the moments' [offset ...)
  };
  std::vector<Owned> owned;
  size_t owned_total = 0;
  for (const auto& [begin, end] : optimizer->owned()) {
    owned.push_back({begin, end, owned_total});
    owned_total += end - begin;
  }
  constexpr size_t kPiece = kernels::HostStaging::kPieceFloats;
  kernels::HostStaging staging(model->backend());
  std::vector<float> piece;
  std::vector<std::pair<size_t, size_t>> loaded;  // [from, to) of the moments, as filled
  for (const std::string& name : state.optimizer_files()) {
    const std::string path = step_dir + "/" + name;
    auto file = io::SafetensorsReader::open(path);
    if (!file.ok()) return file.status();
    auto ranges = ranges_from_string(
        (*file)->metadata().count("ranges") != 0 ? (*file)->metadata().at("ranges") : std::string(),
        path);
    if (!ranges.ok()) return ranges.status();
    const size_t count = (*file)->elements("exp_avg");
    size_t ranged = 0;
    for (const auto& [begin, end] : *ranges) {
      if (end > n || begin > end || ranged + (end - begin) > count ||
          count != (*file)->elements("exp_avg_sq")) {
        return absl::DataLossError(
            absl::StrCat(path, ": optimizer ranges do not match its tensors"));
      }
      ranged += end - begin;
    }
    auto status = check_moments(
        path, count, [&](bool second, size_t first, size_t len) -> absl::StatusOr<const float*> {
          piece.resize(len);
          auto read = (*file)->read(second ? "exp_avg_sq" : "exp_avg", first, len, piece.data());
          if (!read.ok()) return read;
          return piece.data();
        });
    if (!status.ok()) return status;
    size_t cursor = 0;  // where the file's range [begin, end) starts in its tensors
    for (const auto& [begin, end] : *ranges) {
      for (const Owned& mine : owned) {
        const size_t lo = std::max(begin, mine.begin), hi = std::min(end, mine.end);
        if (lo >= hi) continue;
        const size_t from = cursor + (lo - begin), to = mine.offset + (lo - mine.begin);
        for (const bool second : {false, true}) {
          float* moments = second ? optimizer->exp_avg_sq() : optimizer->exp_avg();
          for (size_t done = 0; done < hi - lo; done += kPiece) {
            const size_t len = std::min(hi - lo - done, kPiece);
            float* device = moments + to + done;
            auto read = (*file)->read(second ? "exp_avg_sq" : "exp_avg", from + done, len,
                                      staging.buffer_for(device, len));
            if (!read.ok()) return read;
            staging.write(device, len);
          }
        }
        loaded.emplace_back(to, to + (hi - lo));
      }
      cursor += end - begin;
    }
  }
  // Every owned parameter's moments came from some file.
  std::sort(loaded.begin(), loaded.end());
  size_t filled = 0;  // [0, filled) of the moments is covered
  for (const auto& [from, to] : loaded) {
    if (from > filled) break;
    filled = std::max(filled, to);
  }
  if (filled < owned_total) {
    size_t parameter = 0;
    for (const Owned& mine : owned) {
      if (filled < mine.offset + (mine.end - mine.begin)) {
        parameter = mine.begin + (filled - mine.offset);
        break;
      }
    }
    return absl::DataLossError(
        absl::StrCat(step_dir, ": optimizer state misses parameter ", parameter));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> save_checkpoint(comm::Communicator* comm, model::Gpt2* model,
                                            const AdamW& optimizer, const CheckpointState& state,
                                            const std::string& root_dir, int keep_last) {
  io::CheckpointWriter writer(root_dir, state.step());
  auto saved = write_checkpoint(comm, model, optimizer, state, root_dir, keep_last, writer);
  if (saved.ok() || comm->rank() != 0) return saved;
  // Say what the failure cost. Committed: the step directory is complete and only
  // `latest` lags (commit()'s message says so; a resume takes the newer directory).
  if (writer.committed()) return saved;
  // Otherwise nothing of this checkpoint was kept (the writer removes its temporary
  // directory), and the last complete one still stands.
  const auto complete = io::list_checkpoints(root_dir);
  return absl::Status(saved.status().code(),
                      absl::StrCat("checkpoint of step ", state.step(), " in ", root_dir,
                                   " failed, and nothing of it was kept (",
                                   complete.empty() ? std::string("no complete checkpoint yet")
                                                    : "the last complete one, " +
                                                          complete.back().second + ", is untouched",
                                   "): ", saved.status().message()));
}

absl::StatusOr<LoadedCheckpoint> load_checkpoint(const std::string& step_dir,
                                                 const accum::v1::JobSpec& spec, model::Gpt2* model,
                                                 AdamW* optimizer) {
  if (auto status = io::verify_checkpoint(step_dir); !status.ok()) return status;
  if (auto status = check_manifest_lists_required_files(step_dir); !status.ok()) return status;
  LoadedCheckpoint loaded;
  loaded.path = step_dir;
  auto state_json = io::read_file(step_dir + "/state.json");
  if (!state_json.ok()) return state_json.status();
  google::protobuf::util::JsonParseOptions parse_options;
  parse_options.ignore_unknown_fields = false;
  if (auto s =
          google::protobuf::util::JsonStringToMessage(*state_json, &loaded.state, parse_options);
      !s.ok()) {
    return absl::DataLossError(absl::StrCat(
        step_dir, "/state.json: not a valid checkpoint state: ", s.message().as_string()));
  }
  const CheckpointState& state = loaded.state;
  if (auto s = check_state(step_dir, state); !s.ok()) return s;
  if (auto s = spec::check_resume_compatible(state.spec(), spec); !s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(step_dir, ": ", s.message()));
  }
  if (state.num_params() != static_cast<int64_t>(model->num_params())) {
    return absl::FailedPreconditionError(absl::StrCat(step_dir, "/state.json: checkpoint has ",
                                                      state.num_params(), " parameters, the model ",
                                                      model->num_params()));
  }
  auto weights =
      io::SafetensorsReader::open(step_dir + "/model.safetensors", model::is_hf_gpt2_buffer);
  if (!weights.ok()) return weights.status();
  if (auto s = model::load_hf_weights(model, **weights, step_dir + "/model.safetensors"); !s.ok()) {
    return s;
  }
  if (auto s = load_moments(step_dir, state, model, optimizer); !s.ok()) return s;
  return loaded;
}

}  // namespace accum::train
