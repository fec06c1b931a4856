// model/gpt2_hf.h — Hugging Face GPT2LMHeadModel weights into a Gpt2 (kept apart from
// gpt2.h so the model itself needs no absl or I/O).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "daemon/worker/io/safetensors.h"
#include "daemon/worker/model/gpt2.h"

namespace accum::model {

// Loads every tensor of `file` (names with or without "transformer."; attn.bias buffers
// and the tied lm_head ignored) into `model`'s master weights and working copy.
// INVALID_ARGUMENT names `source`, the tensor and both shapes for an unexpected, missing
// or misshapen tensor, and names the tensor and the element for a NaN or infinity; the
// model is then left unchanged.
absl::Status load_hf_weights(Gpt2* model, const io::SafetensorsFile& file,
                             const std::string& source);

}  // namespace accum::model
