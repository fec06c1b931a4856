// spec/spec.h — parsing and validating job specs: the one validator shared by
// accum-worker and accumd, so a spec is judged the same in a file and in an RPC.
//
// A spec is accum.v1.JobSpec as canonical protobuf JSON (snake_case or
// lowerCamelCase names). Unknown fields are rejected by name. Every error is an
// INVALID_ARGUMENT whose message names the field (`batch.seq_len`) and what was
// expected.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/spec/model_config.h"
#include "proto/accum.pb.h"

namespace accum::spec {

// Head sizes (d_model / n_head) the CUDA attention kernels are instantiated for: see
// dispatch_head_size() and the check before it in kernels/cuda/attention.cu, which must
// stay in step with this list. validate_and_fill() refuses any other with device CUDA, so
// such a spec fails at submit rather than at the worker's first forward.
inline constexpr int kCudaAttentionHeadSizes[] = {8, 16, 32, 64, 128};

// Parses JSON text into a JobSpec (no validation). Accepts a single string where
// a list of paths is expected (data.train, data.val).
absl::StatusOr<accum::v1::JobSpec> parse_spec_json(const std::string& json);
// Canonical JSON of a spec (snake_case, defaults included), one line or indented.
std::string spec_to_json(const accum::v1::JobSpec& spec, bool pretty = false);

// Resolves every relative path in the spec against `base_dir`.
void resolve_paths(accum::v1::JobSpec* spec, const std::string& base_dir);
// Range-checks every field, expands model presets into explicit sizes and fills
// defaults (see accum.proto). Checks that need the world size are in
// grad_accum_steps(). Idempotent.
absl::Status validate_and_fill(accum::v1::JobSpec* spec);
// A spec file's text: NOT_FOUND naming the file and the error when it cannot be read, and
// INVALID_ARGUMENT for more than kMaxSpecFileBytes (a data file or /dev/zero given by
// mistake is refused after that much, not read into memory whole). Pipes work.
inline constexpr size_t kMaxSpecFileBytes = 16 << 20;
absl::StatusOr<std::string> read_spec_text(const std::string& path);
// Reads, parses, resolves (against the file's folder) and validates a spec file.
absl::StatusOr<accum::v1::JobSpec> load_spec_file(const std::string& path);

// K = tokens_per_update / (B*T*world) — or grad_accum_steps when given. A
// remainder is INVALID_ARGUMENT naming the three numbers.
absl::StatusOr<int> grad_accum_steps(const accum::v1::JobSpec& spec, int world_size);
// World sizes in [1, max_world] for which grad_accum_steps() succeeds.
std::string valid_world_sizes(const accum::v1::JobSpec& spec, int max_world = 64);

// Whether a checkpoint written under `saved` (its state.json spec) can seed a run
// of `current`: the model shape, the micro-batch geometry (B, T), the seed and
// data.shuffle must agree. FAILED_PRECONDITION naming the first field that differs.
absl::Status check_resume_compatible(const accum::v1::JobSpec& saved,
                                     const accum::v1::JobSpec& current);

ModelConfig model_config(const accum::v1::JobSpec& spec);  // REQUIRES: validated spec
// Parameters of a GPT-2 of this shape (tied head).
int64_t parameter_count(const ModelConfig& config);

}  // namespace accum::spec
