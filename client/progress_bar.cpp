// client/progress_bar.cpp — progress formatting for `accumctl watch`.
#include "client/progress_bar.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"

namespace accum::ctl {
namespace {

std::string format_rate(double tokens_per_s) {
  if (tokens_per_s >= 1e6) return absl::StrFormat("%.2fM", tokens_per_s / 1e6);
  if (tokens_per_s >= 1e3) return absl::StrFormat("%.1fk", tokens_per_s / 1e3);
  return absl::StrFormat("%.0f", tokens_per_s);
}

}  // namespace

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t total = static_cast<int64_t>(seconds + 0.5);
  if (total >= 3600) {
    return absl::StrFormat("%d:%02d:%02d", total / 3600, (total / 60) % 60, total % 60);
  }
  return absl::StrFormat("%d:%02d", total / 60, total % 60);
}

std::string format_loss(const accum::v1::StepMetrics& metrics, int decimals) {
  return metrics.has_loss() ? absl::StrFormat("%.*f", decimals, metrics.loss()) : "-";
}

std::string format_progress_bar(const accum::v1::StepMetrics& metrics, int64_t max_steps,
                                const std::string& state, int width) {
  const double fraction =
      max_steps > 0 ? std::clamp(static_cast<double>(metrics.step()) / max_steps, 0.0, 1.0) : 0.0;
  const int filled = static_cast<int>(fraction * width);
  std::string bar(filled, '#');
  bar.append(width - filled, '.');
  const double eta_s = (max_steps - metrics.step()) * metrics.step_ms() / 1000.0;
  return absl::StrFormat("[%s] %*d/%d steps  loss %s  %s tok/s  ETA %s  %s", bar,
                         std::to_string(max_steps).size(), metrics.step(), max_steps,
                         format_loss(metrics), format_rate(metrics.tokens_per_s()),
                         format_duration(eta_s), state);
}

std::string format_step_line(const accum::v1::StepMetrics& metrics, int64_t max_steps) {
  return absl::StrFormat("step %d/%d loss %s lr %.3g grad_norm %.4f tokens/s %.0f step_ms %.1f",
                         metrics.step(), max_steps, format_loss(metrics, 6), metrics.lr(),
                         metrics.grad_norm(), metrics.tokens_per_s(), metrics.step_ms());
}

}  // namespace accum::ctl
