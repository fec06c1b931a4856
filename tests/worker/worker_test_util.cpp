#include "tests/worker/worker_test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "daemon/worker/io/checkpoint_dir.h"
#include "daemon/worker/io/json.h"
#include "daemon/worker/io/safetensors.h"

namespace accum::testing {
namespace fs = std::filesystem;

std::string build_dir() {
  const char* dir = std::getenv("ACCUM_BUILD_DIR");
  return dir ? dir : "build";
}
std::string worker_binary() {
  if (const char* binary = std::getenv("ACCUM_WORKER_BINARY")) return binary;
  return build_dir() + "/bin/accum-worker";
}

void write_file(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string make_corpus(size_t bytes, uint64_t seed) {
  static const char* kWords[] = {"the ", "gradient ", "of ",    "a ",    "sum ",
                                 "is ",  "the ",      "sum ",   "of ",   "gradients",
                                 ". ",   "\n",        "batch ", "token "};
  std::string text;
  uint64_t state = seed;
  while (text.size() < bytes) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    text += kWords[(state >> 33) % (sizeof(kWords) / sizeof(kWords[0]))];
  }
  text.resize(bytes);
  return text;
}

static int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

pid_t spawn(const std::vector<std::string>& argv, const std::string& log_path) {
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    setpgid(0, 0);
    std::vector<char*> args;
    for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid, int timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  int status = 0;
  while (true) {
    pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) return decode_status(status);
    if (std::chrono::steady_clock::now() > deadline) {
      kill(-pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

RunResult run(const std::vector<std::string>& argv, int timeout_s) {
  TempDir dir;
  const std::string log = dir / "out.log";
  RunResult result;
  result.exit_code = wait_exit(spawn(argv, log), timeout_s);
  result.output = read_file(log);
  return result;
}

std::string tiny_spec_json(const std::map<std::string, std::string>& overrides) {
  std::map<std::string, std::string> fields = {
      {"name", "\"tiny\""},
      {"model.n_layer", "2"},
      {"model.n_head", "2"},
      {"model.d_model", "32"},
      {"model.vocab_size", "256"},
      {"model.max_seq_len", "16"},
      {"data.train", "\"corpus.txt\""},
      {"data.format", "\"TEXT_BYTES\""},
      {"batch.micro_batch_size", "2"},
      {"batch.seq_len", "16"},
      {"batch.tokens_per_update", "128"},
      {"optimizer.lr", "0.003"},
      {"optimizer.schedule", "\"cosine\""},
      {"optimizer.warmup_steps", "2"},
      {"optimizer.min_lr", "0.0003"},
      {"max_steps", "6"},
      {"seed", "5"},
      {"checkpoint.dir", "\"ckpt\""},
      {"metrics_path", "\"metrics.jsonl\""},
  };
  for (const auto& [key, value] : overrides) {
    if (value.empty()) {
      fields.erase(key);
    } else {
      fields[key] = value;
    }
  }
  // Group "a.b" keys into nested objects (one level is all specs need).
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> groups;
  std::vector<std::pair<std::string, std::string>> top;
  for (const auto& [key, value] : fields) {
    auto dot = key.find('.');
    if (dot == std::string::npos) {
      top.emplace_back(key, value);
    } else {
      groups[key.substr(0, dot)].emplace_back(key.substr(dot + 1), value);
    }
  }
  std::string json = "{";
  bool first = true;
  auto comma = [&] {
    if (!first) json += ", ";
    first = false;
  };
  for (const auto& [key, value] : top) {
    comma();
    json += "\"" + key + "\": " + value;
  }
  for (const auto& [group, members] : groups) {
    comma();
    json += "\"" + group + "\": {";
    for (size_t i = 0; i < members.size(); ++i) {
      json += (i ? ", " : "") + ("\"" + members[i].first + "\": " + members[i].second);
    }
    json += "}";
  }
  return json + "}";
}

std::vector<MetricsLine> read_metrics(const std::string& path) {
  std::vector<MetricsLine> lines;
  std::ifstream in(path);
  std::string line;
  auto number = [](const std::string& text, const std::string& key) -> double {
    std::smatch match;
    std::regex pattern("\"" + key + "\":(-?[0-9.eE+-]+)");
    if (!std::regex_search(text, match, pattern)) return NAN;
    return std::stod(match[1]);
  };
  while (std::getline(in, line)) {
    MetricsLine m;
    m.raw = line;
    m.step = static_cast<int64_t>(number(line, "step"));
    m.loss = number(line, "loss");
    m.lr = number(line, "lr");
    m.grad_norm = number(line, "grad_norm");
    m.tokens = static_cast<int64_t>(number(line, "tokens"));
    m.collectives = static_cast<int64_t>(number(line, "collectives"));
    m.bytes_reduced = static_cast<int64_t>(number(line, "bytes_reduced"));
    lines.push_back(m);
  }
  return lines;
}

void rewrite_manifest(const std::string& step_dir,
                      const std::function<bool(io::ManifestEntry&)>& change) {
  auto manifest = io::read_manifest(step_dir);
  if (!manifest.ok()) throw std::runtime_error(std::string(manifest.status().message()));
  io::Json files = io::Json::array();
  for (io::ManifestEntry entry : manifest->files) {
    if (!change(entry)) continue;
    io::Json json = io::Json::object();
    json.set("name", entry.name);
    json.set("size", entry.size);
    json.set("sha256", entry.sha256);
    files.push_back(std::move(json));
  }
  io::Json json = io::Json::object();
  json.set("step", manifest->step);
  json.set("files", std::move(files));
  write_file(step_dir + "/manifest.json", json.dump(2) + "\n");
  if (auto status = io::verify_checkpoint(step_dir); !status.ok()) {
    throw std::runtime_error(std::string(status.message()));
  }
}

void reseal_manifest(const std::string& step_dir, const std::string& file) {
  rewrite_manifest(step_dir, [&](io::ManifestEntry& entry) {
    if (entry.name == file) {
      entry.size = static_cast<int64_t>(fs::file_size(step_dir + "/" + file));
      entry.sha256 = *io::sha256_file(step_dir + "/" + file);
    }
    return true;
  });
}

void rewrite_tensor(const std::string& path, const std::string& tensor,
                    const std::function<void(std::vector<float>*)>& change) {
  auto file = io::read_safetensors(path);
  if (!file.ok()) throw std::runtime_error(std::string(file.status().message()));
  auto found = file->tensors.find(tensor);
  if (found == file->tensors.end()) throw std::runtime_error(path + " has no tensor " + tensor);
  change(&found->second.data);
  std::vector<io::TensorView> views;
  for (const auto& [name, t] : file->tensors) views.push_back({name, t.shape, t.data.data()});
  if (auto status = io::write_safetensors(path, views, file->metadata); !status.ok()) {
    throw std::runtime_error(std::string(status.message()));
  }
}

std::vector<float> read_weights(const std::string& path) {
  auto file = io::read_safetensors(path);
  if (!file.ok()) throw std::runtime_error(std::string(file.status().message()));
  std::vector<float> all;
  for (const auto& [name, tensor] : file->tensors) {
    all.insert(all.end(), tensor.data.begin(), tensor.data.end());
  }
  return all;
}

double relative_l2(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    norm += double(b[i]) * b[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30);
}

double metric_value(const MetricsLine& line, const std::string& key) {
  const std::string needle = "\"" + key + "\":";
  const auto pos = line.raw.find(needle);
  if (pos == std::string::npos) return NAN;
  return std::strtod(line.raw.c_str() + pos + needle.size(), nullptr);
}

int64_t gpt2_parameter_count(int64_t n_layer, int64_t d_model, int64_t vocab, int64_t max_seq_len) {
  const int64_t C = d_model;
  // ln_1 (2C) + c_attn (C x 3C + 3C) + attn c_proj (C x C + C) + ln_2 (2C)
  // + c_fc (C x 4C + 4C) + mlp c_proj (4C x C + C) = 12C^2 + 13C per block.
  const int64_t per_block = 12 * C * C + 13 * C;
  return vocab * C + max_seq_len * C + n_layer * per_block + 2 * C /*ln_f*/;
}

}  // namespace accum::testing
