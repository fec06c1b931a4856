// model/gpt2_hf.cpp — Hugging Face weights into the flat parameter buffer (see gpt2_hf.h).
#include "daemon/worker/model/gpt2_hf.h"

#include <algorithm>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/worker/io/finite_values.h"

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

absl::Status load_hf_weights(Gpt2* model, const io::SafetensorsFile& file,
                             const std::string& source) {
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, tensor] : file.tensors) shapes[name] = tensor.shape;
  auto placed = place_hf_tensors(*model, shapes, source);
  if (!placed.ok()) return placed.status();
  std::vector<float> host(model->num_params(), 0.0f);
  for (const auto& [raw_name, index] : *placed) {
    const io::Tensor& tensor = file.tensors.at(raw_name);
    // A NaN or infinity would train on as NaN from the first step, and a resumed run would
    // write it into every later checkpoint.
    if (auto bad = io::first_non_finite(tensor.data.data(), tensor.data.size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": tensor ", raw_name, " holds ", io::value_name(tensor.data[*bad]),
          " at element ", *bad, " of ", tensor.data.size(), "; expected finite weights"));
    }
    std::copy(tensor.data.begin(), tensor.data.end(),
              host.begin() + model->tensors()[index].offset);
  }
  model->upload_params(host);
  return absl::OkStatus();
}

}  // namespace accum::model
