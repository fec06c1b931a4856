// model/gpt2_hf.cpp — Hugging Face weights into the flat parameter buffer (see gpt2_hf.h).
#include "daemon/worker/model/gpt2_hf.h"

#include <algorithm>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/worker/io/finite_values.h"
#include "kernels/host_staging.h"

namespace accum::model {
namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

constexpr char kTiedHead[] = "lm_head.weight";
constexpr char kTokenEmbedding[] = "transformer.wte.weight";
constexpr char kTokenEmbeddingUnprefixed[] = "wte.weight";

}  // namespace

bool is_hf_gpt2_buffer(const std::string& name) {
  return name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias");
}

absl::StatusOr<std::map<std::string, size_t>> place_hf_tensors(
    const Gpt2& model, const std::map<std::string, std::vector<int64_t>>& shapes,
    const std::string& source) {
  const std::vector<ParamTensor>& tensors = model.tensors();
  std::vector<bool> seen(tensors.size(), false);
  // The head shares wte's storage, so a file may hold either name (or both, equal).
  const bool head_is_wte = shapes.count(kTiedHead) != 0 && shapes.count(kTokenEmbedding) == 0 &&
                           shapes.count(kTokenEmbeddingUnprefixed) == 0;
  std::map<std::string, size_t> placed;
  for (const auto& [raw_name, shape] : shapes) {
    std::string name = raw_name;
    if (name == kTiedHead) {
      if (!head_is_wte) continue;
      name = kTokenEmbedding;
    } else if (is_hf_gpt2_buffer(name)) {
      continue;
    }
    if (!name.starts_with("transformer.")) name = "transformer." + name;
    size_t index = 0;
    while (index < tensors.size() && tensors[index].name != name) ++index;
    if (index == tensors.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": unexpected tensor \"", raw_name, "\" for a GPT-2 with n_layer ",
                       model.config().n_layer, " (expected Hugging Face GPT2LMHeadModel names)"));
    }
    if (shape != tensors[index].shape) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": tensor ", raw_name, " has shape ",
                                                     shape_string(shape), ", expected ",
                                                     shape_string(tensors[index].shape)));
    }
    if (seen[index]) {
      // wte.weight beside transformer.wte.weight, say: which one is meant is not known.
      for (const auto& [other, at] : placed) {
        if (at == index) {
          return absl::InvalidArgumentError(absl::StrCat(source, ": tensors ", other, " and ",
                                                         raw_name, " both hold ",
                                                         tensors[index].name, "; expected one"));
        }
      }
    }
    placed[raw_name] = index;
    seen[index] = true;
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!seen[i]) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": missing tensor ", tensors[i].name,
                                                     " of shape ", shape_string(tensors[i].shape)));
    }
  }
  return placed;
}

absl::Status load_hf_weights(Gpt2* model, const io::SafetensorsReader& file,
                             const std::string& source) {
  auto placed = place_hf_tensors(*model, file.shapes(), source);
  if (!placed.ok()) return placed.status();
  constexpr size_t kPiece = kernels::HostStaging::kPieceFloats;
  // First every value is checked: a NaN or infinity would train on as NaN from the first
  // step, and a resumed run would write it into every later checkpoint.
  std::vector<float> piece;
  for (const auto& [raw_name, index] : *placed) {
    const size_t count = model->tensors()[index].numel;
    for (size_t first = 0; first < count; first += kPiece) {
      const size_t n = std::min(count - first, kPiece);
      piece.resize(n);
      if (auto s = file.read(raw_name, first, n, piece.data()); !s.ok()) return s;
      if (auto bad = io::first_non_finite(piece.data(), n)) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ": tensor ", raw_name, " holds ", io::value_name(piece[*bad]),
                         " at element ", first + *bad, " of ", count, "; expected finite weights"));
      }
    }
  }
  piece = {};
  // Then loaded: on the CPU back end read straight into the weights.
  kernels::HostStaging staging(model->backend());
  for (const auto& [raw_name, index] : *placed) {
    const ParamTensor& tensor = model->tensors()[index];
    for (size_t first = 0; first < tensor.numel; first += kPiece) {
      const size_t n = std::min(tensor.numel - first, kPiece);
      float* device = model->params() + tensor.offset + first;
      if (auto s = file.read(raw_name, first, n, staging.buffer_for(device, n)); !s.ok()) return s;
      staging.write(device, n);
    }
  }
  model->sync_working_copy();
  return absl::OkStatus();
}

}  // namespace accum::model
