#include "daemon/worker/train/metrics.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace accum::train {
namespace {

// Whether an MPI launcher (mpirun / mpiexec of Open MPI, MPICH's Hydra, srun with PMI or
// PMIx) started this process.
bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

// Shortest text that reads back to the same double: metrics lines compare exactly.
std::string number(double value) {
  if (!std::isfinite(value)) return "null";
  char buffer[32];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return ec == std::errc() ? std::string(buffer, end) : absl::StrFormat("%.17g", value);
}

// Cuts the file after the last whole line of a step <= resume_step, so a resumed run
// neither repeats steps nor continues a line an interrupted run left unfinished. Lines are
// in step order (each run appends after such a cut), so that is one truncate(2): it needs
// no free space, and the lines kept are never rewritten.
absl::Status cut_after(const std::string& path, int64_t resume_step) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::OkStatus();  // no file yet
  off_t keep = 0;
  std::string line;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // no '\n': an unfinished line
    const auto pos = line.find("\"step\":");
    if (pos == std::string::npos || std::atoll(line.c_str() + pos + 7) > resume_step) break;
    keep += static_cast<off_t>(line.size()) + 1;
  }
  in.close();
  if (::truncate(path.c_str(), keep) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot cut metrics_path ", path,
                                                   " back to step ", resume_step, ": ",
                                                   std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

std::string metrics_json(const accum::v1::StepMetrics& m, const StepCommDetail* detail) {
  std::string out = absl::StrCat(
      // A step that counted no target has no loss: null, so the key is still there.
      "{\"step\":", m.step(), ",\"loss\":", m.has_loss() ? number(m.loss()) : "null",
      ",\"lr\":", number(m.lr()), ",\"grad_norm\":", number(m.grad_norm()),
      ",\"tokens\":", m.tokens(), ",\"tokens_per_s\":", number(m.tokens_per_s()),
      ",\"step_ms\":", number(m.step_ms()));
  if (m.has_val_loss()) absl::StrAppend(&out, ",\"val_loss\":", number(m.val_loss()));
  absl::StrAppend(&out, ",\"grad_accum_steps\":", m.grad_accum_steps(),
                  ",\"world_size\":", m.world_size(), ",\"collectives\":", m.collectives(),
                  ",\"bytes_reduced\":", m.bytes_reduced(),
                  ",\"comm_exposed_ms\":", number(m.comm_exposed_ms()),
                  ",\"model_tflops\":", number(m.model_tflops()));
  if (m.has_mfu()) absl::StrAppend(&out, ",\"mfu\":", number(m.mfu()));
  if (detail != nullptr) {
    absl::StrAppend(
        &out,
        ",\"first_gradient_collective_micro_step\":", detail->first_gradient_collective_micro_step,
        ",\"collectives_before_last_micro_step\":", detail->collectives_before_last_micro_step,
        ",\"param_collectives\":", detail->param_collectives,
        ",\"bytes_gathered\":", detail->bytes_gathered,
        ",\"gather_exposed_ms\":", number(detail->gather_exposed_ms),
        ",\"step_collectives\":", detail->step_collectives);
  }
  return out + "}";
}

absl::Status MetricsSink::open(const std::string& path, int64_t resume_step, int log_every) {
  // A progress bar on a terminal; one line per step otherwise. Open MPI gives each rank a
  // pseudo-terminal even when mpirun's output goes to a file (accumd's logs), so under an
  // MPI launcher the lines are what a reader of the logs wants.
  tty_ = isatty(STDOUT_FILENO) == 1 && !launched_by_mpi();
  log_every_ = log_every > 0 ? log_every : 1;
  path_ = path;
  if (path.empty()) return absl::OkStatus();
  if (resume_step > 0) {
    if (auto status = cut_after(path, resume_step); !status.ok()) return status;
  }
  fd_ = ::open(path.c_str(),
               O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (resume_step > 0 ? 0 : O_TRUNC), 0644);
  if (fd_ < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot open metrics_path ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

MetricsSink::~MetricsSink() {
  if (fd_ >= 0) ::close(fd_);
}

void MetricsSink::append(const std::string& line) {
  const off_t end = ::lseek(fd_, 0, SEEK_END);
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  if (done == line.size()) {
    if (lost_lines_ > 0) {
      std::fprintf(stderr, "accum-worker: metrics_path %s: writing again; %lld step line(s) lost\n",
                   path_.c_str(), static_cast<long long>(lost_lines_));
      lost_lines_ = 0;
    }
    return;
  }
  // A full disk (or another error): drop the part written, so the file keeps whole lines.
  const int error = errno;
  if (end >= 0) (void)::ftruncate(fd_, end);
  if (lost_lines_++ == 0) {
    std::fprintf(stderr,
                 "accum-worker: warning: metrics_path %s: write failed: %s; step lines are lost "
                 "until it works again (training goes on)\n",
                 path_.c_str(), std::strerror(error));
  }
}

void MetricsSink::write(const accum::v1::StepMetrics& m, const StepCommDetail* detail) {
  if (fd_ >= 0) append(metrics_json(m, detail) + "\n");
  const double remaining_s =
      m.tokens_per_s() > 0 ? (m.max_steps() - m.step()) * m.step_ms() / 1000.0 : 0.0;
  // A step that counted no target (all masked) has no loss: "-".
  const std::string loss = m.has_loss() ? absl::StrFormat("%.4f", m.loss()) : "-";
  std::string val = m.has_val_loss() ? absl::StrFormat(" val %.4f", m.val_loss()) : "";
  if (tty_) {
    const int width = 24;
    const int filled = static_cast<int>(width * m.step() / std::max<int64_t>(1, m.max_steps()));
    std::string bar(filled, '#');
    bar.resize(width, '.');
    std::fprintf(stdout, "\r[%s] %lld/%lld loss %s%s lr %.2e %.0f tok/s ETA %.0fs   ", bar.c_str(),
                 static_cast<long long>(m.step()), static_cast<long long>(m.max_steps()),
                 loss.c_str(), val.c_str(), m.lr(), m.tokens_per_s(), remaining_s);
    std::fflush(stdout);
    bar_drawn_ = true;
  } else if (m.step() % log_every_ == 0 || m.step() == m.max_steps() || m.has_val_loss()) {
    std::fprintf(stdout, "step %lld/%lld loss %s%s lr %.3e grad_norm %.3f %.0f tok/s %.1f ms\n",
                 static_cast<long long>(m.step()), static_cast<long long>(m.max_steps()),
                 loss.c_str(), val.c_str(), m.lr(), m.grad_norm(), m.tokens_per_s(), m.step_ms());
    std::fflush(stdout);
  }
}

void MetricsSink::message(const std::string& line) {
  if (bar_drawn_) std::fputs("\n", stdout);
  bar_drawn_ = false;
  std::fprintf(stdout, "%s\n", line.c_str());
  std::fflush(stdout);
}

void MetricsSink::finish() {
  if (bar_drawn_) std::fputs("\n", stdout);
  bar_drawn_ = false;
  std::fflush(stdout);
}

}  // namespace accum::train
