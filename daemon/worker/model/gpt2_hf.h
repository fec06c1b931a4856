// model/gpt2_hf.h — Hugging Face GPT2LMHeadModel weights into a Gpt2 (kept apart from
// gpt2.h so the model itself needs no absl or I/O).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/worker/io/safetensors.h"
#include "daemon/worker/model/gpt2.h"

namespace accum::model {

// Whether `name` is one of GPT2LMHeadModel's causal-mask buffers (`attn.bias`,
// `attn.masked_bias`), which are no weights: pass it as SafetensorsReader's `skip`, since
// older transformers saved them as BOOL or U8.
bool is_hf_gpt2_buffer(const std::string& name);

// Where each tensor named in `shapes` (a file's names and shapes, before any data is read)
// goes: its index in model.tensors(), for the names load_hf_weights loads. The same
// INVALID_ARGUMENT as load_hf_weights for an unexpected, missing, misshapen or twice-given
// tensor (with and without "transformer."), so a
// file of another model is refused before its data is converted (GPT-2 XL's would be 6 GB).
absl::StatusOr<std::map<std::string, size_t>> place_hf_tensors(
    const Gpt2& model, const std::map<std::string, std::vector<int64_t>>& shapes,
    const std::string& source);

// Loads every tensor of `file` (names with or without "transformer."; attn.bias buffers
// ignored) into `model`'s master weights and working copy, a piece at a time (the host
// holds one piece, not the weights: kernels/host_staging.h). The LM head is tied to wte:
// `lm_head.weight` is ignored when wte is present and loaded as wte when it is not (as
// safetensors' save_model writes a tied GPT-2). INVALID_ARGUMENT names `source`, the
// tensor and both shapes for an unexpected, missing or misshapen tensor, and names the
// tensor and the element for a NaN or infinity; the model is then left unchanged (every
// value is checked before the first is loaded). A read error (the file cut short) may
// leave it partly loaded.
absl::Status load_hf_weights(Gpt2* model, const io::SafetensorsReader& file,
                             const std::string& source);

}  // namespace accum::model
