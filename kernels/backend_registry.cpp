// make_backend(): the registry that turns a device kind from the job spec into a back end.
#include <stdexcept>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#ifdef ACCUM_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace accum::kernels {

bool backend_available(DeviceKind kind, std::string* why) {
  switch (kind) {
    case DeviceKind::kCpu:
      return true;
    case DeviceKind::kCuda:
#ifdef ACCUM_HAVE_CUDA
      return cuda_device_available(why);
#else
      if (why) *why = "this build has no CUDA back end (nvcc was not found at configure time)";
      return false;
#endif
  }
  return false;
}

std::unique_ptr<Backend> make_backend(DeviceKind kind, int local_rank,
                                      const BackendOptions& options) {
  std::string why;
  if (!backend_available(kind, &why)) throw std::runtime_error("CUDA back end unavailable: " + why);
  switch (kind) {
    case DeviceKind::kCpu:
      return make_cpu_backend();
    case DeviceKind::kCuda:
#ifdef ACCUM_HAVE_CUDA
      return make_cuda_backend(local_rank, options);
#else
      break;
#endif
  }
  (void)local_rank;
  (void)options;
  throw std::runtime_error("unknown back end");
}

}  // namespace accum::kernels
