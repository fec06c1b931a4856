// bench/daemon/latency_stats.h — order statistics of request latencies.
//
// Percentiles are nearest-rank over the sorted samples (p = 0.99 picks the
// sample at ceil(0.99 * n) - 1), so p99 of 100 samples is the 99th smallest:
// no interpolation, every reported number is a latency that was observed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace accum::bench {

struct LatencySummary {
  int64_t count = 0;
  double p50_ms = 0;
  double p90_ms = 0;
  double p99_ms = 0;
  double p999_ms = 0;
  double max_ms = 0;
  double mean_ms = 0;
};

// REQUIRES: samples in microseconds. Sorts `samples` in place.
LatencySummary summarize_latencies(std::vector<double>* samples_us);

// Median of `values` (the mean of the middle two for an even count); 0 when empty.
double median(std::vector<double> values);

// "1.23" style fixed formatting used in the result tables.
std::string fixed(double value, int digits = 2);

}  // namespace accum::bench
