// bench/daemon/latency_stats.cpp — nearest-rank percentiles and medians.
#include "bench/daemon/latency_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_format.h"

namespace accum::bench {
namespace {

// Nearest rank: the smallest sample with at least p*n samples at or below it.
double nearest_rank(const std::vector<double>& sorted, double p) {
  const auto n = static_cast<double>(sorted.size());
  const auto rank = static_cast<size_t>(std::max(1.0, std::ceil(p * n)));
  return sorted[std::min(rank, sorted.size()) - 1];
}

}  // namespace

LatencySummary summarize_latencies(std::vector<double>* samples_us) {
  LatencySummary summary;
  if (samples_us->empty()) return summary;
  std::sort(samples_us->begin(), samples_us->end());
  constexpr double kUsPerMs = 1000.0;
  summary.count = static_cast<int64_t>(samples_us->size());
  summary.p50_ms = nearest_rank(*samples_us, 0.50) / kUsPerMs;
  summary.p90_ms = nearest_rank(*samples_us, 0.90) / kUsPerMs;
  summary.p99_ms = nearest_rank(*samples_us, 0.99) / kUsPerMs;
  summary.p999_ms = nearest_rank(*samples_us, 0.999) / kUsPerMs;
  summary.max_ms = samples_us->back() / kUsPerMs;
  summary.mean_ms = std::accumulate(samples_us->begin(), samples_us->end(), 0.0) /
                    static_cast<double>(samples_us->size()) / kUsPerMs;
  return summary;
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t mid = values.size() / 2;
  return values.size() % 2 == 1 ? values[mid] : 0.5 * (values[mid - 1] + values[mid]);
}

std::string fixed(double value, int digits) { return absl::StrFormat("%.*f", digits, value); }

}  // namespace accum::bench
