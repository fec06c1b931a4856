// spec/model_config.h — the GPT-2 shape a spec's model section resolves to (see
// spec::model_config). Plain and dependency-free: the model (daemon/worker/model) and the
// standalone GPU build (bench/gpu) use it without the proto/absl stack.
#pragma once

namespace accum::spec {

struct ModelConfig {
  int n_layer = 0;
  int n_head = 0;
  int d_model = 0;
  int vocab_size = 0;
  int max_seq_len = 0;
};

}  // namespace accum::spec
