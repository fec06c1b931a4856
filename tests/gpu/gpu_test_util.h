// tests/gpu/gpu_test_util.h — helpers for comparing the CUDA back end with the CPU oracle.
//
// Inputs are drawn in fp32 and rounded to bf16 on the host, so both back ends see the same
// values; everything moves through the Backend interface only (upload + f32_to_act), so
// the same helpers serve both back ends. Write-only outputs are poisoned with NaN bytes
// (0xFF..) before an op runs: an element the op forgot to write fails the comparison.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "tests/kernels/test_util.h"

namespace accum::kernels::gpu_testing {

// Runs `body` with environment variable `name` set to `value` ("" = unset), then restores
// it, also when `body` throws: a test that fails inside must not leave its switch on for the
// tests after it (a cuBLASLt report left on failed every later test on the H100).
// Back ends read their switches (ACCUM_ATTENTION, ACCUM_CUBLASLT_*) when created.
template <typename Body>
void with_env(const char* name, const char* value, Body body) {
  struct Restore {
    const char* name;
    bool was_set;
    std::string saved;
    ~Restore() {
      if (was_set) {
        setenv(name, saved.c_str(), 1);
      } else {
        unsetenv(name);
      }
    }
  };
  const char* before = std::getenv(name);
  const Restore restore{name, before != nullptr, before ? before : ""};
  if (*value) {
    setenv(name, value, 1);
  } else {
    unsetenv(name);
  }
  body();
}

// Skips the current test, with the reason, when no CUDA device can be used.
#define ACCUM_REQUIRE_CUDA()                                                                      \
  do {                                                                                            \
    std::string accum_why_;                                                                       \
    if (!::accum::kernels::backend_available(::accum::kernels::DeviceKind::kCuda, &accum_why_)) { \
      GTEST_SKIP() << "CUDA back end unavailable: " << accum_why_;                                \
    }                                                                                             \
  } while (0)

// Tolerances of issue 4: bf16 paths and fp32 paths.
constexpr double kBf16Tolerance = 1e-2;
constexpr double kF32Tolerance = 1e-5;

// Round-to-nearest-even to bf16, returned as float.
inline float round_bf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  if ((bits & 0x7f800000u) == 0x7f800000u) return x;  // inf / NaN unchanged
  bits += 0x7fffu + ((bits >> 16) & 1u);
  bits &= 0xffff0000u;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

// n values mean + stddev * N(0,1), rounded to bf16, reproducible from `seed`.
inline std::vector<float> random_bf16_values(size_t n, uint64_t seed, float stddev = 1.f,
                                             float mean = 0.f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(mean, stddev);
  std::vector<float> values(n);
  for (auto& value : values) value = round_bf16(dist(rng));
  return values;
}

inline std::vector<int32_t> random_ints(size_t n, int32_t upper, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, upper - 1);
  std::vector<int32_t> values(n);
  for (auto& value : values) value = dist(rng);
  return values;
}

// ||got - want|| / ||want||; NaN or inf anywhere in `got` gives +inf (fails any bound).
inline double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return INFINITY;
  double diff = 0, norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double d = double(got[i]) - double(want[i]);
    diff += d * d;
    norm += double(want[i]) * double(want[i]);
  }
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

inline std::vector<float> scaled(const std::vector<float>& values, float factor) {
  std::vector<float> out(values);
  for (auto& value : out) value *= factor;
  return out;
}

// Device memory of one back end, released on scope exit.
class Buffer {
 public:
  Buffer(Backend& backend, size_t bytes) : backend_(&backend), bytes_(bytes) {
    ptr_ = backend.alloc(bytes);
  }
  ~Buffer() {
    if (ptr_ != nullptr) backend_->release(ptr_);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& other) noexcept
      : backend_(other.backend_), ptr_(other.ptr_), bytes_(other.bytes_) {
    other.ptr_ = nullptr;
  }

  void* get() const { return ptr_; }
  float* f32() const { return static_cast<float*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  Backend* backend_;
  void* ptr_ = nullptr;
  size_t bytes_;
};

// fp32 device buffer holding `values`.
inline Buffer upload_f32(Backend& backend, const std::vector<float>& values) {
  Buffer buffer(backend, values.size() * sizeof(float));
  backend.upload(buffer.get(), values.data(), buffer.bytes());
  return buffer;
}

// Activation-dtype buffer (bf16 on CUDA, fp32 on the CPU) holding `values`.
inline Buffer upload_act(Backend& backend, const std::vector<float>& values) {
  Buffer staging = upload_f32(backend, values);
  Buffer buffer(backend, values.size() * backend.act_bytes());
  backend.f32_to_act(buffer.get(), staging.f32(), values.size());
  backend.synchronize();
  return buffer;
}

inline Buffer upload_ints(Backend& backend, const std::vector<int32_t>& values) {
  Buffer buffer(backend, values.size() * sizeof(int32_t));
  backend.upload(buffer.get(), values.data(), buffer.bytes());
  return buffer;
}

inline std::vector<float> download_f32(Backend& backend, const void* src, size_t n) {
  std::vector<float> values(n);
  backend.synchronize();
  backend.download(values.data(), src, n * sizeof(float));
  return values;
}

inline std::vector<float> download_act(Backend& backend, const void* src, size_t n) {
  Buffer staging(backend, n * sizeof(float));
  backend.act_to_f32(staging.f32(), src, n);
  return download_f32(backend, staging.get(), n);
}

// Raw bytes, for bit-identity checks.
inline std::vector<uint8_t> download_bytes(Backend& backend, const void* src, size_t bytes) {
  std::vector<uint8_t> values(bytes);
  backend.synchronize();
  backend.download(values.data(), src, bytes);
  return values;
}

// Padded rows (the logits' row stride): shared with the CPU kernel tests.
using testing::finite_padding;
using testing::packed_rows;
using testing::padded_rows;
using testing::thrown_message;

// Fills with 0xFF bytes: NaN in fp32 and in bf16.
inline void poison(Backend& backend, const Buffer& buffer) {
  std::vector<uint8_t> bytes(buffer.bytes(), 0xff);
  backend.upload(buffer.get(), bytes.data(), bytes.size());
}

// An activation-dtype output buffer of n elements, poisoned.
inline Buffer poisoned_act(Backend& backend, size_t n) {
  Buffer buffer(backend, n * backend.act_bytes());
  poison(backend, buffer);
  return buffer;
}

inline Buffer poisoned_f32(Backend& backend, size_t n) {
  Buffer buffer(backend, n * sizeof(float));
  poison(backend, buffer);
  return buffer;
}

// The CPU oracle and the CUDA back end under test.
struct Backends {
  std::unique_ptr<Backend> cpu = make_backend(DeviceKind::kCpu);
  std::unique_ptr<Backend> gpu = make_backend(DeviceKind::kCuda);
};

}  // namespace accum::kernels::gpu_testing
