// model/gpt2_hf.h — Hugging Face GPT2LMHeadModel weights into a Gpt2 (kept apart from
// gpt2.h so the model itself needs no absl or I/O).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "daemon/worker/io/safetensors.h"
#include "daemon/worker/model/gpt2.h"

namespace accum::model {

// Whether `name` is one of GPT2LMHeadModel's causal-mask buffers (`attn.bias`,
// `attn.masked_bias`), which are no weights: pass it as read_safetensors' `skip`, since
// older transformers saved them as BOOL or U8.
bool is_hf_gpt2_buffer(const std::string& name);

// Loads every tensor of `file` (names with or without "transformer."; attn.bias buffers
// ignored) into `model`'s master weights and working copy. The LM head is tied to wte:
// `lm_head.weight` is ignored when wte is present and loaded as wte when it is not (as
// safetensors' save_model writes a tied GPT-2). INVALID_ARGUMENT names `source`, the
// tensor and both shapes for an unexpected, missing or misshapen tensor, and names the
// tensor and the element for a NaN or infinity; the model is then left unchanged.
absl::Status load_hf_weights(Gpt2* model, const io::SafetensorsFile& file,
                             const std::string& source);

}  // namespace accum::model
