// kernels/cuda/device_peak.cpp — see device_peak.h. Host code only.
#include "kernels/cuda/device_peak.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

namespace accum::kernels::cuda {
namespace {

struct Peak {
  const char* name;
  double tflops;
};

// The vendors' dense bf16 figures (fp32 accumulation), most specific names first.
constexpr Peak kPeaks[] = {{"H100 PCIe", 756.0}, {"H100 NVL", 835.0}, {"H100", 989.4},
                           {"H200", 989.4},      {"GH200", 989.4},    {"B200", 2250.0},
                           {"A100", 312.0},      {"L40S", 362.0},     {"L4", 121.0},
                           {"A10", 125.0},       {"RTX 4090", 165.2}};

}  // namespace

double dense_bf16_peak_tflops(const std::string& device_name) {
  for (const Peak& peak : kPeaks) {
    if (device_name.find(peak.name) != std::string::npos) return peak.tflops;
  }
  return 0.0;
}

double peak_tflops_for(const std::string& device_name) {
  const char* forced = std::getenv("ACCUM_PEAK_TFLOPS");
  if (forced == nullptr || *forced == '\0') return dense_bf16_peak_tflops(device_name);
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(forced, &end);
  if (errno != 0 || *end != '\0' || !std::isfinite(value) || value <= 0) {
    throw std::runtime_error(std::string("ACCUM_PEAK_TFLOPS='") + forced +
                             "': expected the device's dense peak in TFLOP/s, a positive number");
  }
  return value;
}

}  // namespace accum::kernels::cuda
