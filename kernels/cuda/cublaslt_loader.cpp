// kernels/cuda/cublaslt_loader.cpp — the cublasLt* functions matmul.cpp calls, forwarding to
// libcublasLt opened on first use (see cublaslt_loader.h for why it is not linked).
#include "kernels/cuda/cublaslt_loader.h"

#include <stdexcept>
#include <string>

#ifndef ACCUM_SIMT_EMULATION
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#endif

namespace accum::kernels::cuda {

#ifdef ACCUM_SIMT_EMULATION

// The emulator's cuBLASLt is linked in: there is nothing to load.
std::string cublaslt_library_name() { return "the SIMT emulator's cuBLASLt (linked in)"; }
bool load_cublaslt(std::string*) { return true; }

#else

namespace {

// Every cuBLASLt function the back end calls. A new call in matmul.cpp needs a line here and
// a forwarding definition below, or the link fails (nothing else defines it).
#define ACCUM_CUBLASLT_FUNCTIONS(X)       \
  X(cublasLtCreate)                       \
  X(cublasLtDestroy)                      \
  X(cublasLtGetVersion)                   \
  X(cublasLtMatmul)                       \
  X(cublasLtMatmulAlgoGetHeuristic)       \
  X(cublasLtMatmulDescCreate)             \
  X(cublasLtMatmulDescDestroy)            \
  X(cublasLtMatmulDescSetAttribute)       \
  X(cublasLtMatmulPreferenceCreate)       \
  X(cublasLtMatmulPreferenceDestroy)      \
  X(cublasLtMatmulPreferenceSetAttribute) \
  X(cublasLtMatrixLayoutCreate)           \
  X(cublasLtMatrixLayoutDestroy)

struct Api {
#define ACCUM_CUBLASLT_POINTER(name) decltype(&::name) name = nullptr;
  ACCUM_CUBLASLT_FUNCTIONS(ACCUM_CUBLASLT_POINTER)
#undef ACCUM_CUBLASLT_POINTER
};

struct Loaded {
  Api api;
  bool ok = false;
  std::string why;  // when !ok
};

#define ACCUM_STRINGIFY_VALUE(x) #x
#define ACCUM_STRINGIFY(x) ACCUM_STRINGIFY_VALUE(x)
constexpr char kDefaultLibrary[] = "libcublasLt.so." ACCUM_STRINGIFY(CUBLAS_VER_MAJOR);
constexpr char kLibraryEnv[] = "ACCUM_CUBLASLT_LIBRARY";

// Where libcudart (linked, so already loaded) lives: CUDA installs cuBLASLt beside it, so
// this finds it when the loader's search path does not (a worker installed away from the
// RUNPATH it was built with). "" when dladdr cannot say.
std::string cudart_directory() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<const void*>(&cudaGetDeviceCount), &info) == 0 ||
      info.dli_fname == nullptr) {
    return "";
  }
  const std::string path = info.dli_fname;
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

void* open_library(const std::string& name, std::string* error) {
  // RTLD_LOCAL: its symbols serve the pointers below only, never the rest of the process
  // (which resolves cublasLt* to the forwarding definitions in this file).
  if (void* handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL)) return handle;
  const char* first = dlerror();
  *error = first != nullptr ? first : "dlopen failed";
  if (name.find('/') != std::string::npos) return nullptr;  // a path: nowhere else to look
  const std::string directory = cudart_directory();
  if (directory.empty()) return nullptr;
  const std::string beside_cudart = directory + "/" + name;
  if (void* handle = dlopen(beside_cudart.c_str(), RTLD_NOW | RTLD_LOCAL)) return handle;
  const char* second = dlerror();
  *error += "; beside libcudart: " + std::string(second != nullptr ? second : "dlopen failed");
  return nullptr;
}

Loaded load() {
  Loaded loaded;
  const std::string name = cublaslt_library_name();
  std::string error;
  void* handle = open_library(name, &error);
  if (handle == nullptr) {
    loaded.why = "cannot load cuBLASLt (" + name + "): " + error +
                 ". The CUDA back end needs CUDA " ACCUM_STRINGIFY(CUBLAS_VER_MAJOR) "'s cuBLASLt: "
                 "put its lib directory on LD_LIBRARY_PATH, or name the library in $" +
                 kLibraryEnv;
    return loaded;
  }
  std::string missing;
#define ACCUM_CUBLASLT_RESOLVE(fn)                                       \
  loaded.api.fn = reinterpret_cast<decltype(&::fn)>(dlsym(handle, #fn)); \
  if (loaded.api.fn == nullptr) missing += (missing.empty() ? "" : ", ") + std::string(#fn);
  ACCUM_CUBLASLT_FUNCTIONS(ACCUM_CUBLASLT_RESOLVE)
#undef ACCUM_CUBLASLT_RESOLVE
  if (!missing.empty()) {
    dlclose(handle);
    loaded.api = Api{};
    loaded.why = "cannot use " + name + " as cuBLASLt: it does not define " + missing;
    return loaded;
  }
  loaded.ok = true;  // the handle stays open for the life of the process
  return loaded;
}

const Loaded& loaded() {
  static std::once_flag once;
  static Loaded* result = nullptr;  // never destroyed: forwarding calls may come from atexit
  std::call_once(once, [] { result = new Loaded(load()); });
  return *result;
}

// The loaded function, or nullptr when cuBLASLt could not be loaded; the caller then returns
// CUBLAS_STATUS_NOT_INITIALIZED. The back end calls require_cublaslt() before any of these,
// so that reaches a user as load_cublaslt()'s reason, not as a bare status.
template <typename Fn>
Fn function(Fn Api::*member) {
  const Loaded& l = loaded();
  return l.ok ? l.api.*member : nullptr;
}

}  // namespace

std::string cublaslt_library_name() {
  const char* configured = std::getenv(kLibraryEnv);
  return configured != nullptr && *configured != '\0' ? configured : kDefaultLibrary;
}

bool load_cublaslt(std::string* why) {
  const Loaded& l = loaded();
  if (!l.ok && why != nullptr) *why = l.why;
  return l.ok;
}

#endif  // ACCUM_SIMT_EMULATION

void require_cublaslt() {
  std::string why;
  if (!load_cublaslt(&why)) throw std::runtime_error(why);
}

}  // namespace accum::kernels::cuda

#ifndef ACCUM_SIMT_EMULATION
// ---- the forwarding definitions (declared by cublasLt.h) ----
namespace {
using accum::kernels::cuda::Api;
using accum::kernels::cuda::function;
}  // namespace

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  auto fn = function(&Api::cublasLtCreate);
  return fn != nullptr ? fn(handle) : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  auto fn = function(&Api::cublasLtDestroy);
  return fn != nullptr ? fn(handle) : CUBLAS_STATUS_NOT_INITIALIZED;
}

size_t cublasLtGetVersion(void) {
  auto fn = function(&Api::cublasLtGetVersion);
  return fn != nullptr ? fn() : 0;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha,
                              const void* a, cublasLtMatrixLayout_t a_desc, const void* b,
                              cublasLtMatrixLayout_t b_desc, const void* beta, const void* c,
                              cublasLtMatrixLayout_t c_desc, void* d, cublasLtMatrixLayout_t d_desc,
                              const cublasLtMatmulAlgo_t* algo, void* workspace,
                              size_t workspace_bytes, cudaStream_t stream) {
  auto fn = function(&Api::cublasLtMatmul);
  return fn != nullptr ? fn(handle, desc, alpha, a, a_desc, b, b_desc, beta, c, c_desc, d, d_desc,
                            algo, workspace, workspace_bytes, stream)
                       : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a_desc,
    cublasLtMatrixLayout_t b_desc, cublasLtMatrixLayout_t c_desc, cublasLtMatrixLayout_t d_desc,
    cublasLtMatmulPreference_t preference, int requested, cublasLtMatmulHeuristicResult_t results[],
    int* returned) {
  auto fn = function(&Api::cublasLtMatmulAlgoGetHeuristic);
  return fn != nullptr ? fn(handle, desc, a_desc, b_desc, c_desc, d_desc, preference, requested,
                            results, returned)
                       : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc,
                                        cublasComputeType_t compute_type,
                                        cudaDataType_t scale_type) {
  auto fn = function(&Api::cublasLtMatmulDescCreate);
  return fn != nullptr ? fn(desc, compute_type, scale_type) : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  auto fn = function(&Api::cublasLtMatmulDescDestroy);
  return fn != nullptr ? fn(desc) : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attribute,
                                              const void* value, size_t bytes) {
  auto fn = function(&Api::cublasLtMatmulDescSetAttribute);
  return fn != nullptr ? fn(desc, attribute, value, bytes) : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* preference) {
  auto fn = function(&Api::cublasLtMatmulPreferenceCreate);
  return fn != nullptr ? fn(preference) : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t preference) {
  auto fn = function(&Api::cublasLtMatmulPreferenceDestroy);
  return fn != nullptr ? fn(preference) : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t preference,
                                                    cublasLtMatmulPreferenceAttributes_t attribute,
                                                    const void* value, size_t bytes) {
  auto fn = function(&Api::cublasLtMatmulPreferenceSetAttribute);
  return fn != nullptr ? fn(preference, attribute, value, bytes) : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  auto fn = function(&Api::cublasLtMatrixLayoutCreate);
  return fn != nullptr ? fn(layout, type, rows, cols, ld) : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  auto fn = function(&Api::cublasLtMatrixLayoutDestroy);
  return fn != nullptr ? fn(layout) : CUBLAS_STATUS_NOT_INITIALIZED;
}

}  // extern "C"
#endif  // ACCUM_SIMT_EMULATION
