// bench/gpu/clock_sampler.h — the card's SM clock and power-cap state while a benchmark runs,
// sampled through NVML every 5 ms, so that a timing can say at what clock it was taken.
//
// Why: a card held at its power limit (700 W on an H100 SXM) lowers its SM clock under long,
// dense runs of matrix work and raises it again when memory-bound work lets the power fall.
// Two timings of the same work at different clocks differ for that reason alone; the K-scaling
// table of gpt2_bench shows each block's mean clock next to its times.
//
// NVML is the driver's libnvidia-ml.so.1, opened at run time: the build needs neither NVML's
// header nor its library (a GPU host of bench/gpu.sh may have only the driver), and without it
// available() is false and every block reports no samples.
// Thread safety: begin_block / end_block from one thread; the sampler runs its own.
#pragma once

#include <cuda_runtime.h>
#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

namespace accum::bench {

class ClockSampler {
 public:
  struct Block {
    int samples = 0;
    double mean_sm_mhz = 0;
    double power_capped_share = 0;  // of samples with NVML's "SW power cap" clock reason set
  };

  // Samples the CUDA device `cuda_device` (matched to NVML by PCI bus id) into `blocks` buckets.
  ClockSampler(int cuda_device, size_t blocks) : sums_(blocks) {
    if (!open(cuda_device)) return;
    thread_ = std::thread([this] { run(); });
  }
  ~ClockSampler() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (nvml_ != nullptr) {
      if (shutdown_ != nullptr) shutdown_();
      dlclose(nvml_);
    }
  }
  ClockSampler(const ClockSampler&) = delete;
  ClockSampler& operator=(const ClockSampler&) = delete;

  bool available() const { return device_ != nullptr; }

  // Samples from now on count towards block `index` (< blocks), until end_block().
  void begin_block(size_t index) { current_ = static_cast<long>(index); }
  void end_block() { current_ = -1; }

  Block block(size_t index) const {
    std::lock_guard<std::mutex> lock(mutex_);
    const Sums& s = sums_.at(index);
    Block b;
    b.samples = s.samples;
    if (s.samples > 0) {
      b.mean_sm_mhz = s.sm_mhz / s.samples;
      b.power_capped_share = double(s.power_capped) / s.samples;
    }
    return b;
  }

 private:
  // NVML's C API, the few calls used here (nvml.h): status 0 is NVML_SUCCESS.
  using Device = void*;
  using InitFn = int (*)();
  using HandleByBusIdFn = int (*)(const char*, Device*);
  using ClockInfoFn = int (*)(Device, int, unsigned*);
  using ReasonsFn = int (*)(Device, unsigned long long*);
  static constexpr int kClockSm = 1;                         // NVML_CLOCK_SM
  static constexpr unsigned long long kSwPowerCap = 0x4ull;  // nvmlClocksEventReasonSwPowerCap

  struct Sums {
    int samples = 0;
    double sm_mhz = 0;
    int power_capped = 0;
  };

  bool open(int cuda_device) {
    char bus_id[32] = {};
    if (cudaDeviceGetPCIBusId(bus_id, sizeof bus_id, cuda_device) != cudaSuccess) {
      (void)cudaGetLastError();  // no clocks is not an error of the benchmark
      return false;
    }
    nvml_ = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (nvml_ == nullptr) return false;
    auto init = reinterpret_cast<InitFn>(dlsym(nvml_, "nvmlInit_v2"));
    shutdown_ = reinterpret_cast<InitFn>(dlsym(nvml_, "nvmlShutdown"));
    auto by_bus =
        reinterpret_cast<HandleByBusIdFn>(dlsym(nvml_, "nvmlDeviceGetHandleByPciBusId_v2"));
    clock_ = reinterpret_cast<ClockInfoFn>(dlsym(nvml_, "nvmlDeviceGetClockInfo"));
    reasons_ = reinterpret_cast<ReasonsFn>(dlsym(nvml_, "nvmlDeviceGetCurrentClocksEventReasons"));
    if (reasons_ == nullptr) {  // drivers before 535 name it by its old name
      reasons_ =
          reinterpret_cast<ReasonsFn>(dlsym(nvml_, "nvmlDeviceGetCurrentClocksThrottleReasons"));
    }
    if (init == nullptr || by_bus == nullptr || clock_ == nullptr || reasons_ == nullptr ||
        init() != 0) {
      return false;
    }
    Device device = nullptr;
    if (by_bus(bus_id, &device) != 0) return false;
    device_ = device;
    return true;
  }

  void run() {
    while (!stop_) {
      const long index = current_;
      unsigned mhz = 0;
      unsigned long long reasons = 0;
      if (index >= 0 && clock_(device_, kClockSm, &mhz) == 0 && reasons_(device_, &reasons) == 0) {
        std::lock_guard<std::mutex> lock(mutex_);
        Sums& s = sums_[static_cast<size_t>(index)];
        ++s.samples;
        s.sm_mhz += mhz;
        s.power_capped += (reasons & kSwPowerCap) != 0;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  void* nvml_ = nullptr;
  Device device_ = nullptr;
  InitFn shutdown_ = nullptr;
  ClockInfoFn clock_ = nullptr;
  ReasonsFn reasons_ = nullptr;
  std::atomic<long> current_{-1};
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::vector<Sums> sums_;  // GUARDED_BY(mutex_)
  std::thread thread_;
};

}  // namespace accum::bench
