// tests/worker/worker_test_util.h — helpers for tests that run the real accum-worker:
// temporary job folders, spec files, process runs with captured output, metrics parsing.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "daemon/worker/io/checkpoint_dir.h"
#include "tests/common/temp_dir.h"

namespace accum::testing {

std::string build_dir();      // $ACCUM_BUILD_DIR (set by ctest)
std::string worker_binary();  // $ACCUM_WORKER_BINARY, else <build>/bin/accum-worker
void write_file(const std::string& path, const std::string& contents);
std::string read_file(const std::string& path);
// Deterministic "text" with enough structure for a byte-level model to learn.
std::string make_corpus(size_t bytes, uint64_t seed = 7);

struct RunResult {
  int exit_code = -1;  // 128+signal when killed
  std::string output;  // stdout and stderr together
};
// Runs argv to completion (killed after timeout_s), capturing output.
RunResult run(const std::vector<std::string>& argv, int timeout_s = 300);
// Starts argv in the background with output to `log_path`; returns the pid.
pid_t spawn(const std::vector<std::string>& argv, const std::string& log_path);
// Waits for pid; returns its exit code (128+signal when killed).
int wait_exit(pid_t pid, int timeout_s);

// A small byte-level job spec (JSON) in `dir` training on corpus.txt, with overrides
// applied as "path.to.field" -> raw JSON value.
std::string tiny_spec_json(const std::map<std::string, std::string>& overrides = {});

struct MetricsLine {
  int64_t step = 0;
  double loss = 0, lr = 0, grad_norm = 0;
  int64_t tokens = 0, collectives = 0, bytes_reduced = 0;
  std::string raw;
};
std::vector<MetricsLine> read_metrics(const std::string& path);
// A numeric field of a metrics line (NaN when absent).
double metric_value(const MetricsLine& line, const std::string& key);

// GPT-2 parameter count (DESIGN.md's model; LM head tied): what the flat gradient buffer holds.
int64_t gpt2_parameter_count(int64_t n_layer, int64_t d_model, int64_t vocab, int64_t max_seq_len);

// Rewrites a checkpoint's manifest entry for `file` (size and sha256) to match the file as
// it is now, so only the reader's own checks of its contents can catch a change made to
// it. Throws std::runtime_error when the manifest cannot be read or does not verify after.
void reseal_manifest(const std::string& step_dir, const std::string& file);
// Rewrites a checkpoint's manifest with each entry as `change` leaves it, dropping those it
// returns false for. Throws std::runtime_error when the manifest cannot be read or does not
// verify after.
void rewrite_manifest(const std::string& step_dir,
                      const std::function<bool(io::ManifestEntry&)>& change);
// Applies `change` to every element of `tensor` in the safetensors file at `path` and
// writes the file back (metadata kept). Throws std::runtime_error on any failure.
void rewrite_tensor(const std::string& path, const std::string& tensor,
                    const std::function<void(std::vector<float>*)>& change);

// All fp32 values of a safetensors file, tensor by tensor in name order.
std::vector<float> read_weights(const std::string& path);
double relative_l2(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace accum::testing
