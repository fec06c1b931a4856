// spec/spec.cpp — the job spec validator. Every check names the field and the
// expected value, because the same messages reach users of the worker's command
// line and of the daemon's SubmitJob RPC.
#include "daemon/spec/spec.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/spec/spec_json.h"

namespace accum::spec {
namespace {

using accum::v1::JobSpec;
namespace fs = std::filesystem;

absl::Status invalid(const std::string& field, const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat("spec field `", field, "`: ", message));
}

struct Preset {
  const char* name;
  int n_layer, n_head, d_model;
};
constexpr Preset kPresets[] = {
    {"gpt2-124m", 12, 12, 768},  {"gpt2-350m", 24, 16, 1024}, {"gpt2-774m", 36, 20, 1280},
    {"gpt2-1.3b", 24, 16, 2048}, {"gpt2-1.5b", 48, 25, 1600},
};
constexpr int kGpt2Vocab = 50257;
constexpr int kGpt2Context = 1024;
// An evaluation reads this many micro-batches at most: more would stall training for hours.
constexpr int kMaxEvalBatches = 10000;

// A single string where a list of paths is expected becomes a one-element list.
// Returns true when `root` was changed.
bool wrap_path_strings(google::protobuf::Struct* root) {
  auto data_it = root->mutable_fields()->find("data");
  if (data_it == root->mutable_fields()->end() || !data_it->second.has_struct_value()) return false;
  bool changed = false;
  for (const char* key : {"train", "val"}) {
    auto* fields = data_it->second.mutable_struct_value()->mutable_fields();
    auto it = fields->find(key);
    if (it == fields->end() || it->second.kind_case() != google::protobuf::Value::kStringValue) {
      continue;
    }
    std::string path = it->second.string_value();
    it->second.mutable_list_value()->add_values()->set_string_value(path);
    changed = true;
  }
  return changed;
}

absl::Status check_range(const std::string& field, double value, double lo, double hi,
                         const std::string& expected) {
  if (!std::isfinite(value) || value < lo || value > hi) {
    return invalid(field, absl::StrCat("got ", value, ", expected ", expected));
  }
  return absl::OkStatus();
}

// A number outside its enum (JSON accepts numbers, and a proto client can send any)
// is refused by name, listing the values the enum has.
absl::Status check_enum(const std::string& field, int value,
                        const google::protobuf::EnumDescriptor* descriptor) {
  if (descriptor->FindValueByNumber(value) != nullptr) return absl::OkStatus();
  std::string names;
  for (int i = 0; i < descriptor->value_count(); ++i) {
    absl::StrAppend(&names, i == 0 ? "" : ", ", descriptor->value(i)->name());
  }
  return invalid(
      field, absl::StrCat("got ", value, ", which is not a known value; expected one of ", names));
}

absl::Status fill_model(accum::v1::ModelSpec* model) {
  if (!model->preset().empty()) {
    const Preset* found = nullptr;
    for (const Preset& preset : kPresets) {
      if (model->preset() == preset.name) found = &preset;
    }
    if (found == nullptr) {
      return invalid("model.preset",
                     absl::StrCat("unknown preset \"", model->preset(),
                                  "\", expected one of gpt2-124m, gpt2-350m, gpt2-774m, gpt2-1.3b, "
                                  "gpt2-1.5b"));
    }
    auto set_or_check = [&](const std::string& field, int value, int preset_value,
                            auto setter) -> absl::Status {
      if (value != 0 && value != preset_value) {
        return invalid(absl::StrCat("model.", field),
                       absl::StrCat("got ", value, " but preset ", found->name, " has ",
                                    preset_value, "; drop the field or the preset"));
      }
      setter(preset_value);
      return absl::OkStatus();
    };
    if (auto s = set_or_check("n_layer", model->n_layer(), found->n_layer,
                              [&](int v) { model->set_n_layer(v); });
        !s.ok())
      return s;
    if (auto s = set_or_check("n_head", model->n_head(), found->n_head,
                              [&](int v) { model->set_n_head(v); });
        !s.ok())
      return s;
    if (auto s = set_or_check("d_model", model->d_model(), found->d_model,
                              [&](int v) { model->set_d_model(v); });
        !s.ok())
      return s;
    // vocab_size and max_seq_len may be overridden (e.g. a byte-level GPT-2 124M).
    if (model->vocab_size() == 0) model->set_vocab_size(kGpt2Vocab);
    if (model->max_seq_len() == 0) model->set_max_seq_len(kGpt2Context);
  }
  struct Bound {
    const char* field;
    int value;
    int lo, hi;
  };
  const Bound bounds[] = {{"model.n_layer", model->n_layer(), 1, 256},
                          {"model.n_head", model->n_head(), 1, 256},
                          {"model.d_model", model->d_model(), 1, 65536},
                          {"model.vocab_size", model->vocab_size(), 2, 1 << 24},
                          {"model.max_seq_len", model->max_seq_len(), 1, 1 << 20}};
  for (const Bound& bound : bounds) {
    if (bound.value < bound.lo || bound.value > bound.hi) {
      return invalid(bound.field,
                     absl::StrCat("got ", bound.value, ", expected an integer in [", bound.lo, ", ",
                                  bound.hi, "] (or set model.preset)"));
    }
  }
  if (model->d_model() % model->n_head() != 0) {
    return invalid("model.n_head", absl::StrCat("n_head ", model->n_head(),
                                                " does not divide d_model ", model->d_model()));
  }
  return absl::OkStatus();
}

absl::Status fill_data(accum::v1::JobSpec* spec) {
  auto* data = spec->mutable_data();
  if (data->train_size() == 0) {
    return invalid("data.train", "missing; expected a path, a list of paths or a glob");
  }
  struct PathList {
    const char* field;
    const google::protobuf::RepeatedPtrField<std::string>& paths;
  };
  for (const PathList& list :
       {PathList{"data.train", data->train()}, PathList{"data.val", data->val()}}) {
    for (const auto& path : list.paths) {
      if (path.empty()) {
        return invalid(list.field, "contains an empty path (\"\"); expected a file path or a glob");
      }
    }
  }
  if (auto s = check_enum("data.format", data->format(), accum::v1::DataFormat_descriptor());
      !s.ok())
    return s;
  if (data->format() == accum::v1::TEXT_BYTES && spec->model().vocab_size() < 256) {
    return invalid("model.vocab_size",
                   absl::StrCat("got ", spec->model().vocab_size(),
                                ", but format TEXT_BYTES needs at least 256 (one token per byte)"));
  }
  return absl::OkStatus();
}

absl::Status fill_batch(accum::v1::JobSpec* spec) {
  auto* batch = spec->mutable_batch();
  if (batch->seq_len() == 0) batch->set_seq_len(spec->model().max_seq_len());
  if (auto s = check_range("batch.micro_batch_size", batch->micro_batch_size(), 1, 1 << 20,
                           "an integer >= 1");
      !s.ok())
    return s;
  if (batch->seq_len() < 1) return invalid("batch.seq_len", "expected an integer >= 1");
  if (batch->seq_len() > spec->model().max_seq_len()) {
    return invalid("batch.seq_len",
                   absl::StrCat("seq_len ", batch->seq_len(), " exceeds model.max_seq_len ",
                                spec->model().max_seq_len()));
  }
  // Every op takes a micro-batch's B*T rows as an int (kernels/backend.h), and the memory
  // arithmetic multiplies them by the model's widths and depth in 64 bits: both hold below 2^31
  // tokens. Each bound alone (2^20) let B*T reach 2^40.
  const int64_t micro_tokens = int64_t{batch->micro_batch_size()} * batch->seq_len();
  if (micro_tokens > std::numeric_limits<int32_t>::max()) {
    return invalid("batch.micro_batch_size",
                   absl::StrCat("micro_batch_size*seq_len = ", batch->micro_batch_size(), "*",
                                batch->seq_len(), " = ", micro_tokens,
                                " tokens in one micro-batch; expected at most 2147483647 (the "
                                "ops index a micro-batch's rows with 32-bit integers)"));
  }
  if (batch->tokens_per_update() != 0 && batch->grad_accum_steps() != 0) {
    return invalid("batch.tokens_per_update",
                   "set either tokens_per_update or grad_accum_steps, not both");
  }
  if (batch->tokens_per_update() < 0) {
    return invalid("batch.tokens_per_update",
                   absl::StrCat("got ", batch->tokens_per_update(), ", expected > 0"));
  }
  if (batch->grad_accum_steps() < 0 || batch->grad_accum_steps() > (1 << 20)) {
    return invalid("batch.grad_accum_steps",
                   absl::StrCat("got ", batch->grad_accum_steps(), ", expected in [1, 1048576]"));
  }
  if (batch->tokens_per_update() == 0 && batch->grad_accum_steps() == 0) {
    batch->set_grad_accum_steps(1);
  }
  return absl::OkStatus();
}

// The largest beta the fp32 kernels hold below 1: closer to 1 rounds to 1.0f, where the
// CUDA AdamW's 1 - beta is 0 (the moment never moves) and its updates blow up.
constexpr double kMaxBeta = 0.99999997;
constexpr char kBetaRange[] =
    "a number in [0, 1), at most 0.99999997 (closer to 1 is 1 in the fp32 optimizer kernels)";

absl::Status fill_optimizer(accum::v1::JobSpec* spec) {
  auto* opt = spec->mutable_optimizer();
  if (!opt->has_lr()) opt->set_lr(6e-4);
  if (!opt->has_min_lr()) opt->set_min_lr(0.0);
  if (!opt->has_weight_decay()) opt->set_weight_decay(0.1);
  if (!opt->has_beta1()) opt->set_beta1(0.9);
  if (!opt->has_beta2()) opt->set_beta2(0.95);
  if (!opt->has_eps()) opt->set_eps(1e-8);
  if (!opt->has_grad_clip()) opt->set_grad_clip(1.0);
  if (opt->schedule().empty()) opt->set_schedule("cosine");
  if (opt->schedule() != "cosine" && opt->schedule() != "constant") {
    return invalid("optimizer.schedule", absl::StrCat("got \"", opt->schedule(),
                                                      "\", expected \"cosine\" or \"constant\""));
  }
  struct Check {
    const char* field;
    double value, lo, hi;
    const char* expected;
  };
  const Check checks[] = {
      {"optimizer.lr", opt->lr(), 0, 10, "a number in (0, 10]"},
      {"optimizer.min_lr", opt->min_lr(), 0, opt->lr(), "a number in [0, optimizer.lr]"},
      {"optimizer.weight_decay", opt->weight_decay(), 0, 10, "a number in [0, 10]"},
      {"optimizer.beta1", opt->beta1(), 0, kMaxBeta, kBetaRange},
      {"optimizer.beta2", opt->beta2(), 0, kMaxBeta, kBetaRange},
      {"optimizer.eps", opt->eps(), 1e-30, 1, "a number in (0, 1]"},
      {"optimizer.grad_clip", opt->grad_clip(), 0, 1e9, "a number >= 0 (0 disables clipping)"},
  };
  for (const Check& check : checks) {
    if (auto s = check_range(check.field, check.value, check.lo, check.hi, check.expected); !s.ok())
      return s;
  }
  if (opt->lr() <= 0) return invalid("optimizer.lr", "expected a number in (0, 10]");
  if (opt->warmup_steps() < 0) {
    return invalid("optimizer.warmup_steps",
                   absl::StrCat("got ", opt->warmup_steps(), ", expected >= 0"));
  }
  if (opt->decay_steps() != 0) {
    if (opt->schedule() != "cosine") {
      return invalid("optimizer.decay_steps",
                     absl::StrCat("got ", opt->decay_steps(), " with schedule \"", opt->schedule(),
                                  "\"; expected 0, since only \"cosine\" decays"));
    }
    if (opt->decay_steps() <= opt->warmup_steps()) {
      return invalid("optimizer.decay_steps",
                     absl::StrCat("got ", opt->decay_steps(),
                                  ", expected 0 (decay over max_steps) or a step count above "
                                  "optimizer.warmup_steps (",
                                  opt->warmup_steps(), ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status fill_rest(accum::v1::JobSpec* spec) {
  if (spec->name().empty()) spec->set_name("job");
  if (spec->name().size() > 128) {
    return invalid(
        "name", absl::StrCat("got ", spec->name().size(), " bytes of UTF-8, expected at most 128"));
  }
  for (unsigned char c : spec->name()) {
    if (c < 0x20 || c == 0x7f) return invalid("name", "contains a control character");
  }
  if (spec->max_steps() < 1) {
    return invalid("max_steps", absl::StrCat("got ", spec->max_steps(), ", expected >= 1"));
  }
  auto* ckpt = spec->mutable_checkpoint();
  if (!ckpt->has_keep_last()) ckpt->set_keep_last(3);
  if (ckpt->every_steps() < 0) {
    return invalid("checkpoint.every_steps", absl::StrCat("got ", ckpt->every_steps(),
                                                          ", expected >= 0 (0: only at the end)"));
  }
  if (ckpt->keep_last() < 0) {
    return invalid("checkpoint.keep_last",
                   absl::StrCat("got ", ckpt->keep_last(), ", expected >= 0 (0 keeps all)"));
  }
  auto* eval = spec->mutable_eval();
  if (eval->every_steps() < 0) {
    return invalid("eval.every_steps",
                   absl::StrCat("got ", eval->every_steps(), ", expected >= 0 (0: never)"));
  }
  if (eval->batches() == 0) eval->set_batches(4);
  if (eval->batches() < 0 || eval->batches() > kMaxEvalBatches) {
    return invalid("eval.batches", absl::StrCat("got ", eval->batches(), ", expected 1..",
                                                kMaxEvalBatches, " micro-batches per evaluation"));
  }
  if (eval->every_steps() > 0 && spec->data().val_size() == 0) {
    return invalid("data.val", "eval.every_steps is set but there is no validation data");
  }
  auto* dist = spec->mutable_distributed();
  if (dist->zero_stage() != 0 && dist->zero_stage() != 1) {
    return invalid("distributed.zero_stage",
                   absl::StrCat("got ", dist->zero_stage(), ", expected 0 or 1"));
  }
  if (dist->bucket_mb() == 0) dist->set_bucket_mb(25);
  if (auto s = check_range("distributed.bucket_mb", dist->bucket_mb(), 1.0 / 1024, 4096,
                           "MiB in (0, 4096]");
      !s.ok())
    return s;
  if (dist->timeout_s() == 0) dist->set_timeout_s(300);
  if (auto s = check_range("distributed.timeout_s", dist->timeout_s(), 0.1, 86400,
                           "seconds in [0.1, 86400]");
      !s.ok())
    return s;
  if (spec->world_size() == 0) spec->set_world_size(1);
  if (spec->world_size() < 1 || spec->world_size() > 4096) {
    return invalid("world_size", absl::StrCat("got ", spec->world_size(),
                                              ", expected in [1, 4096] (left out or 0: 1)"));
  }
  // Left unset, it stays unset: the default is the daemon's (--max-restarts), and an
  // explicit 0 must stay distinguishable from it, since 0 means "never restart".
  if (spec->has_max_restarts() && (spec->max_restarts() < 0 || spec->max_restarts() > 1000)) {
    return invalid("max_restarts",
                   absl::StrCat("got ", spec->max_restarts(),
                                ", expected an integer in [0, 1000] (0: never restart; "
                                "leave it out for the daemon's default)"));
  }
  if (spec->log_every_steps() == 0) spec->set_log_every_steps(1);
  if (spec->log_every_steps() < 0) {
    return invalid("log_every_steps",
                   absl::StrCat("got ", spec->log_every_steps(), ", expected >= 1 (left out: 1)"));
  }
  return absl::OkStatus();
}

// The back end: device, its precision and what its kernels support. REQUIRES: the model
// is filled (fill_model).
absl::Status check_device(accum::v1::JobSpec* spec) {
  if (auto s = check_enum("device", spec->device(), accum::v1::Device_descriptor()); !s.ok()) {
    return s;
  }
  if (auto s = check_enum("precision", spec->precision(), accum::v1::Precision_descriptor());
      !s.ok())
    return s;
  if (spec->precision() == accum::v1::PRECISION_DEFAULT) {
    spec->set_precision(spec->device() == accum::v1::CUDA ? accum::v1::BF16 : accum::v1::FP32);
  }
  if (spec->device() == accum::v1::CPU && spec->precision() != accum::v1::FP32) {
    return invalid("precision", "the CPU back end trains in FP32; BF16 needs device CUDA");
  }
  if (spec->device() == accum::v1::CUDA && spec->precision() != accum::v1::BF16) {
    return invalid("precision",
                   "the CUDA back end trains with BF16 activations (fp32 master weights); "
                   "expected BF16");
  }
  if (spec->device() != accum::v1::CUDA && spec->cuda().keep_cublaslt_algorithms()) {
    return invalid("cuda.keep_cublaslt_algorithms",
                   "applies to device CUDA only (cuBLASLt is the CUDA back end's); got device "
                   "CPU");
  }
  if (spec->device() == accum::v1::CUDA) {
    const auto& model = spec->model();
    const int head_size = model.d_model() / model.n_head();
    bool supported = false;
    std::string sizes;
    for (int size : kCudaAttentionHeadSizes) {
      supported = supported || size == head_size;
      absl::StrAppend(&sizes, sizes.empty() ? "" : ", ", size);
    }
    if (!supported) {
      return invalid("model.n_head",
                     absl::StrCat("model.d_model ", model.d_model(), " / model.n_head ",
                                  model.n_head(), " gives head size ", head_size,
                                  ", but device CUDA's attention kernels support head sizes ",
                                  sizes, " only"));
    }
  }
  return absl::OkStatus();
}

// A key given twice in one JSON object: protobuf's parser takes the last value of a field,
// or appends both lists of a repeated one, and reads `max_steps` and `maxSteps` as one
// field. Keys are compared by their protobuf JSON names (max_steps is maxSteps). Text that is
// not well-formed JSON is left to the parser's own error. Also refuses nesting deeper than
// any spec needs: protobuf's parser takes time quadratic in the depth (100,000 levels of
// '[' kept the worker, and accumctl submit, busy for over a minute).
absl::Status check_duplicate_keys(const std::string& json) {
  constexpr size_t kMaxNesting = 32;  // a spec nests 3 deep (data.train's list)
  struct Object {
    std::string path;
    std::set<std::string> keys;
  };
  std::vector<Object> objects;   // the objects we are inside, innermost last
  std::vector<char> containers;  // '{' or '[' for each open bracket
  std::string last_string;
  bool expect_key = false;  // the next string in this object is a key
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (c == '"') {
      std::string text;
      for (++i; i < json.size() && json[i] != '"'; ++i) {
        if (json[i] == '\\' && i + 1 < json.size()) ++i;
        text += json[i];
      }
      if (expect_key && !objects.empty()) {
        std::string normal;  // as protobuf's JSON name: max_steps -> maxSteps
        for (size_t k = 0; k < text.size(); ++k) {
          if (text[k] == '_' && k + 1 < text.size()) {
            normal += static_cast<char>(std::toupper(static_cast<unsigned char>(text[++k])));
          } else {
            normal += text[k];
          }
        }
        const std::string field =
            objects.back().path.empty() ? text : absl::StrCat(objects.back().path, ".", text);
        if (!objects.back().keys.insert(normal).second) {
          return invalid(field, "given twice in one object; expected each field once");
        }
        last_string = field;
        expect_key = false;
      }
    } else if ((c == '{' || c == '[') && containers.size() >= kMaxNesting) {
      return invalid(
          last_string.empty() ? std::string("(the top level)") : last_string,
          absl::StrCat("nested deeper than ", kMaxNesting, " objects and lists (at byte ", i,
                       "); a job spec nests them 3 deep at most"));
    } else if (c == '{') {
      const bool nested_in_object = !containers.empty() && containers.back() == '{';
      objects.push_back({nested_in_object ? last_string : std::string(), {}});
      containers.push_back('{');
      expect_key = true;
    } else if (c == '[') {
      containers.push_back('[');
    } else if (c == '}' || c == ']') {
      if (containers.empty()) return absl::OkStatus();
      if (containers.back() == '{' && !objects.empty()) objects.pop_back();
      containers.pop_back();
    } else if (c == ',') {
      expect_key = !containers.empty() && containers.back() == '{';
    }
  }
  return absl::OkStatus();
}

std::string resolve(const std::string& path, const std::string& base_dir) {
  if (path.empty() || fs::path(path).is_absolute() || base_dir.empty()) return path;
  return (fs::path(base_dir) / path).lexically_normal().string();
}

}  // namespace

absl::StatusOr<JobSpec> parse_spec_json(const std::string& json) {
  if (auto status = check_duplicate_keys(json); !status.ok()) return status;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  std::string text = json;
  google::protobuf::Struct root;
  // JSON that is not an object, or not JSON at all, gets protobuf's message below, which
  // points at the offending character.
  if (google::protobuf::util::JsonStringToMessage(json, &root, options).ok()) {
    if (wrap_path_strings(&root)) {
      text.clear();
      (void)google::protobuf::util::MessageToJsonString(root, &text);
    }
    if (auto status = check_spec_json_fields(root); !status.ok()) return status;
  }
  JobSpec spec;
  auto status = google::protobuf::util::JsonStringToMessage(text, &spec, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job spec is not valid JSON for accum.v1.JobSpec: ", status.message().as_string()));
  }
  return spec;
}

std::string spec_to_json(const JobSpec& spec, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  options.add_whitespace = pretty;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(spec, &out, options);
  return out;
}

void resolve_paths(JobSpec* spec, const std::string& base_dir) {
  auto* data = spec->mutable_data();
  for (auto& path : *data->mutable_train()) path = resolve(path, base_dir);
  for (auto& path : *data->mutable_val()) path = resolve(path, base_dir);
  spec->set_init_from(resolve(spec->init_from(), base_dir));
  spec->set_metrics_path(resolve(spec->metrics_path(), base_dir));
  auto* ckpt = spec->mutable_checkpoint();
  if (ckpt->dir().empty()) ckpt->set_dir("checkpoints");
  ckpt->set_dir(resolve(ckpt->dir(), base_dir));
  if (!ckpt->resume_from().empty() && ckpt->resume_from() != "latest") {
    ckpt->set_resume_from(resolve(ckpt->resume_from(), base_dir));
  }
  spec->mutable_launch()->set_hostfile(resolve(spec->launch().hostfile(), base_dir));
}

absl::Status validate_and_fill(JobSpec* spec) {
  if (auto s = fill_model(spec->mutable_model()); !s.ok()) return s;
  if (auto s = fill_data(spec); !s.ok()) return s;
  if (auto s = fill_batch(spec); !s.ok()) return s;
  if (auto s = fill_optimizer(spec); !s.ok()) return s;
  if (auto s = fill_rest(spec); !s.ok()) return s;
  return check_device(spec);
}

absl::StatusOr<std::string> read_spec_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read spec file ", path, ": ", std::strerror(errno)));
  }
  std::string text(kMaxSpecFileBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxSpecFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec file ", path, " holds more than ", kMaxSpecFileBytes >> 20,
                     " MiB; expected a JSON job spec (is it a data file?)"));
  }
  return text;
}

absl::StatusOr<JobSpec> load_spec_file(const std::string& path) {
  auto text = read_spec_text(path);
  if (!text.ok()) return text.status();
  auto spec = parse_spec_json(*text);
  if (!spec.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", spec.status().message()));
  }
  std::string base = fs::absolute(fs::path(path)).parent_path().string();
  resolve_paths(&*spec, base);
  if (auto s = validate_and_fill(&*spec); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.message()));
  }
  return spec;
}

absl::StatusOr<int> grad_accum_steps(const JobSpec& spec, int world_size) {
  if (world_size < 1) return absl::InvalidArgumentError("world size must be >= 1");
  const auto& batch = spec.batch();
  if (batch.grad_accum_steps() > 0) return batch.grad_accum_steps();
  const int64_t per_window = int64_t{batch.micro_batch_size()} * batch.seq_len() * world_size;
  if (batch.tokens_per_update() % per_window != 0 || batch.tokens_per_update() < per_window) {
    return invalid("batch.tokens_per_update",
                   absl::StrCat("tokens_per_update ", batch.tokens_per_update(),
                                " is not a positive multiple of micro_batch_size*seq_len*world = ",
                                batch.micro_batch_size(), "*", batch.seq_len(), "*", world_size,
                                " = ", per_window));
  }
  const int64_t steps = batch.tokens_per_update() / per_window;
  if (steps > (1 << 20)) return invalid("batch.tokens_per_update", "grad_accum_steps above 2^20");
  return static_cast<int>(steps);
}

std::string valid_world_sizes(const JobSpec& spec, int max_world) {
  std::string out;
  for (int world = 1; world <= max_world; ++world) {
    if (grad_accum_steps(spec, world).ok()) absl::StrAppend(&out, out.empty() ? "" : ", ", world);
  }
  return out.empty() ? "none" : out;
}

absl::Status check_resume_compatible(const JobSpec& saved, const JobSpec& current) {
  // Field by field, so the message names what differs.
  const auto* descriptor = saved.model().GetDescriptor();
  const auto* reflection = saved.model().GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const auto* field = descriptor->field(i);
    if (field->name() == "preset") continue;  // presets are expanded into the sizes
    if (field->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_INT32) continue;
    const int32_t a = reflection->GetInt32(saved.model(), field);
    const int32_t b = reflection->GetInt32(current.model(), field);
    if (a != b) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model.", field->name(), ": the checkpoint was written with ", a, ", the spec has ", b));
    }
  }
  if (saved.batch().micro_batch_size() != current.batch().micro_batch_size() ||
      saved.batch().seq_len() != current.batch().seq_len()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint was written with batch.micro_batch_size ", saved.batch().micro_batch_size(),
        " and batch.seq_len ", saved.batch().seq_len(), "; the spec has ",
        current.batch().micro_batch_size(), " and ", current.batch().seq_len()));
  }
  if (saved.seed() != current.seed() || saved.data().shuffle() != current.data().shuffle()) {
    return absl::FailedPreconditionError(
        "checkpoint was written with a different seed or data.shuffle; the data order would "
        "change");
  }
  return absl::OkStatus();
}

ModelConfig model_config(const JobSpec& spec) {
  const auto& m = spec.model();
  return ModelConfig{m.n_layer(), m.n_head(), m.d_model(), m.vocab_size(), m.max_seq_len()};
}

int64_t parameter_count(const ModelConfig& c) {
  const int64_t C = c.d_model, L = c.n_layer;
  const int64_t per_layer = 2 * C /*ln1*/ + C * 3 * C + 3 * C /*attn*/ + C * C + C /*proj*/ +
                            2 * C /*ln2*/ + C * 4 * C + 4 * C /*fc*/ + 4 * C * C + C /*proj*/;
  return int64_t{c.vocab_size} * C + int64_t{c.max_seq_len} * C + L * per_layer + 2 * C;
}

}  // namespace accum::spec
