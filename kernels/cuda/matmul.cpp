// kernels/cuda/matmul.cpp — cuBLASLt plans and the forward/backward GEMMs (see matmul.h).
#include "kernels/cuda/matmul.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "kernels/cuda/cublaslt_loader.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"

namespace accum::kernels::cuda {
namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;  // 32 MiB: enough for Hopper's split-K kernels

// Largest power of two (<= 256) dividing the address: tells cuBLASLt what it may assume.
int alignment_of(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  int alignment = 256;
  while (alignment > 2 && (address % alignment) != 0) alignment /= 2;
  return alignment;
}

// cudaMalloc that reports running out of memory as std::bad_alloc, as Backend::alloc does, so
// the trainer explains it with its memory advice (a CUDA error names no micro-batch).
void* device_alloc(size_t bytes) {
  void* ptr = nullptr;
  const cudaError_t err = cudaMalloc(&ptr, bytes);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // clear it, or the next launch check would report it
    throw std::bad_alloc();
  }
  CUDA_CHECK(err);
  return ptr;
}

// What a choice of algorithm holds for: the GPU and the cuBLASLt version.
std::string machine() {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return std::string(prop.name) + " | cuBLASLt " + std::to_string(cublasLtGetVersion());
}

}  // namespace

struct Matmul::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t preference = nullptr;
  cublasLtMatmulHeuristicResult_t heuristic{};
  long ldd = 0;  // D's leading dimension (>= m)
  ~Plan() {
    // Destructor: failures cannot be reported and do not matter at teardown.
    if (preference) cublasLtMatmulPreferenceDestroy(preference);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

Matmul::Matmul(cudaStream_t stream, const std::string& algorithms_dir,
               const std::string& algorithms_source)
    : stream_(stream) {
  // Its reason, not a bare CUBLAS_STATUS_NOT_INITIALIZED, when cuBLASLt cannot be loaded.
  require_cublaslt();
  const char* gelu = std::getenv("ACCUM_CUBLASLT_GELU");
  gelu_fusion_ = gelu == nullptr || std::string(gelu) != "0";
  const char* bgrad = std::getenv("ACCUM_CUBLASLT_BGRAD");
  bgrad_fusion_ = bgrad != nullptr && std::string(bgrad) == "1";
  const char* split = std::getenv("ACCUM_CUBLASLT_SPLIT");
  split_ragged_ = split == nullptr || std::string(split) != "0";
  const char* report = std::getenv("ACCUM_CUBLASLT_REPORT");
  report_path_ = report != nullptr ? report : "";
  const char* algos = std::getenv("ACCUM_CUBLASLT_ALGOS");
  if (algos != nullptr && *algos != '\0') {
    algos_ = std::make_unique<AlgoTable>(algos, machine());
  } else if (!algorithms_dir.empty()) {
    const std::string here = machine();
    algos_ = std::make_unique<AlgoTable>(algorithms_dir + "/" + algo_file_name(here), here,
                                         algorithms_source);
  }
  CUBLAS_CHECK(cublasLtCreate(&handle_));
  try {
    workspace_ = device_alloc(kWorkspaceBytes);
  } catch (const std::bad_alloc&) {
    cublasLtDestroy(handle_);
    throw;
  }
  workspace_bytes_ = kWorkspaceBytes;
}

Matmul::~Matmul() {
  plans_.clear();
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(handle_);
}

bool Matmul::gelu_fusion_allowed(long ld, const void* aux) const {
  // cuBLASLt: the GELU aux matrix's leading dimension must be a multiple of 8.
  return gelu_fusion_ && ld % 8 == 0 && alignment_of(aux) >= 16;
}

bool Matmul::gemm(void* d, bool d_is_f32, long ldd, const void* a, bool trans_a, long lda,
                  const void* b, bool trans_b, long ldb, long m, long n, long k, float beta,
                  const void* bias, Epilogue epilogue, const void* aux) {
  const int align_a = alignment_of(a), align_b = alignment_of(b), align_d = alignment_of(d);
  const int align_aux = aux != nullptr ? alignment_of(aux) : 0;
  // A plan per shape, leading dimensions, operations, types, alignments and epilogue.
  const bool has_bias = bias != nullptr, adds = beta != 0.f;
  const int epilogue_id = static_cast<int>(epilogue);
  const Key key(m, n, k, lda, ldb, ldd, trans_a, trans_b, d_is_f32, has_bias, adds, align_a,
                align_b, align_d, epilogue_id, align_aux);
  auto found = plans_.find(key);
  if (found == plans_.end()) {
    auto plan = std::make_unique<Plan>();
    const cudaDataType d_type = d_is_f32 ? CUDA_R_32F : CUDA_R_16BF;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a,
                                                sizeof(op_a)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b,
                                                sizeof(op_b)));
    cublasLtEpilogue_t mode = bias != nullptr ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    if (epilogue == Epilogue::kGeluAux) {
      mode = bias != nullptr ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
    } else if (epilogue == Epilogue::kDGelu) {
      mode = CUBLASLT_EPILOGUE_DGELU;
    } else if (epilogue == Epilogue::kBGradA) {
      mode = CUBLASLT_EPILOGUE_BGRADA;
    }
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &mode,
                                                sizeof(mode)));
    if (bias != nullptr) {
      const int32_t bias_type = epilogue == Epilogue::kBGradA ? CUDA_R_32F : CUDA_R_16BF;
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                  &bias_type, sizeof(bias_type)));
    }
    const bool uses_aux = epilogue == Epilogue::kGeluAux || epilogue == Epilogue::kDGelu;
    if (uses_aux) {
      // The aux (GELU input) matrix is bf16 (m, n) with leading dimension m, like D. Its
      // pointer is set before the heuristic, which reads its alignment.
      const int64_t aux_ld = m;
      const int32_t aux_type = CUDA_R_16BF;
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
                                                  &aux_ld, sizeof(aux_ld)));
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
          plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, &aux_type, sizeof(aux_type)));
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
          plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
    }
    CUBLAS_CHECK(
        cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_16BF, trans_a ? k : m, trans_a ? m : k, lda));
    CUBLAS_CHECK(
        cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_16BF, trans_b ? n : k, trans_b ? k : n, ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->d, d_type, m, n, ldd));  // C == D in place
    plan->ldd = ldd;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&plan->preference));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(plan->preference,
                                                      CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                      &workspace_bytes_, sizeof(workspace_bytes_)));
    const uint32_t alignments[3] = {static_cast<uint32_t>(align_a), static_cast<uint32_t>(align_b),
                                    static_cast<uint32_t>(align_d)};
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(plan->preference,
                                                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                      &alignments[0], sizeof(uint32_t)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(plan->preference,
                                                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                      &alignments[1], sizeof(uint32_t)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(plan->preference,
                                                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                      &alignments[2], sizeof(uint32_t)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(plan->preference,
                                                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                      &alignments[2], sizeof(uint32_t)));
    int returned = 0;
    const cublasStatus_t heuristic =
        cublasLtMatmulAlgoGetHeuristic(handle_, plan->desc, plan->a, plan->b, plan->d, plan->d,
                                       plan->preference, 1, &plan->heuristic, &returned);
    if (heuristic != CUBLAS_STATUS_SUCCESS || returned == 0) {
      if (epilogue != Epilogue::kNone) {
        // Remember the refusal (a null plan): the caller falls back to the unfused ops.
        plans_.emplace(key, nullptr);
        return false;
      }
      CUBLAS_CHECK(heuristic);
      const std::string shape = "m=" + std::to_string(m) + " n=" + std::to_string(n) +
                                " k=" + std::to_string(k) + (d_is_f32 ? " D=fp32" : " D=bf16");
      cuda_fatal("cublasLtMatmulAlgoGetHeuristic", ("no algorithm for " + shape).c_str(), __FILE__,
                 __LINE__);
    }
    const Operands operands{a, b, d, bias, uses_aux ? aux : nullptr};
    if (algos_) {
      const std::string name =
          std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) + " " +
          (trans_a ? "T" : "N") + (trans_b ? "T" : "N") + " lda=" + std::to_string(lda) +
          " ldb=" + std::to_string(ldb) + (ldd != m ? " ldd=" + std::to_string(ldd) : "") +
          (d_is_f32 ? " D=fp32" : " D=bf16") + (beta != 0.f ? " beta=1 " : " beta=0 ") +
          epilogue_name(epilogue, bias != nullptr) + " align=" + std::to_string(align_a) + "/" +
          std::to_string(align_b) + "/" + std::to_string(align_d) + "/" + std::to_string(align_aux);
      choose_algorithm(*plan, name, operands, n, d_is_f32, beta);
    }
    if (!report_path_.empty()) {
      const std::string shape =
          std::to_string(m) + " x " + std::to_string(n) + " x " + std::to_string(k) + " | " +
          (trans_a ? "T" : "N") + (trans_b ? "T" : "N") + " | " + (d_is_f32 ? "fp32" : "bf16") +
          " | " + (beta != 0.f ? "1" : "0") + " | " + epilogue_name(epilogue, bias != nullptr) +
          " | " + std::to_string(align_a) + "/" + std::to_string(align_b) + "/" +
          std::to_string(align_d);
      report_candidates(*plan, shape, operands, n, d_is_f32, beta);
    }
    found = plans_.emplace(key, std::move(plan)).first;
  }
  if (found->second == nullptr) return false;  // an epilogue refused earlier
  Plan& plan = *found->second;
  if (bias != nullptr) {
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                sizeof(bias)));
  }
  if (epilogue == Epilogue::kGeluAux || epilogue == Epilogue::kDGelu) {
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
        plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
  }
  const float alpha = 1.f;
  CUBLAS_CHECK(cublasLtMatmul(handle_, plan.desc, &alpha, a, plan.a, b, plan.b, &beta, d, plan.d, d,
                              plan.d, &plan.heuristic.algo, workspace_, workspace_bytes_, stream_));
  return true;
}

const char* Matmul::epilogue_name(Epilogue epilogue, bool bias) {
  switch (epilogue) {
    case Epilogue::kGeluAux:
      return bias ? "GELU_AUX_BIAS" : "GELU_AUX";
    case Epilogue::kDGelu:
      return "DGELU";
    case Epilogue::kBGradA:
      return "BGRADA";
    default:
      return bias ? "BIAS" : "-";
  }
}

std::vector<cublasLtMatmulHeuristicResult_t> Matmul::candidates(const Plan& plan) {
  constexpr int kCandidates = 8;
  std::vector<cublasLtMatmulHeuristicResult_t> results(kCandidates);
  int returned = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle_, plan.desc, plan.a, plan.b, plan.d, plan.d,
                                              plan.preference, kCandidates, results.data(),
                                              &returned));
  results.resize(static_cast<size_t>(returned));
  return results;
}

std::vector<float> Matmul::time_candidates(
    Plan& plan, const std::vector<cublasLtMatmulHeuristicResult_t>& results,
    const Operands& operands, long n, bool d_is_f32, float beta) {
  // Every candidate is warmed up, then timed in kRounds interleaved rounds of kTimed runs; its
  // time is its best round's. Interleaving spreads what changes over the timing (the clock
  // an idle GPU ramps up from when a process starts) over all candidates alike.
  constexpr int kWarmup = 2, kRounds = 3, kTimed = 5;
  // Where the runs write. With beta 0 the product overwrites D, and its GELU aux or BGRADA
  // output, when it runs for real right after this: the runs write the caller's buffers. Scratch
  // copies of them (as large as the logits, Vp x B*T bf16: 6.6 GB for GPT-2 124M at B = 64, and
  // an aux as large for every product) were outside the memory plan and ran out of memory at
  // micro-batches it said fit. With beta 1, D holds gradients: the runs add into a zeroed copy.
  void* d = operands.d;
  void* scratch_d = nullptr;
  if (beta != 0.f) {
    const size_t d_bytes = static_cast<size_t>(plan.ldd) * n * (d_is_f32 ? 4 : 2);
    scratch_d = device_alloc(d_bytes);
    d = scratch_d;
    CUDA_CHECK(cudaMemsetAsync(scratch_d, 0, d_bytes, stream_));
  }
  // The aux pointer rides in the descriptor since the plan was made (the caller's); gemm() sets
  // the bias pointer before every product that has one. cuBLASLt refuses (status 7) a product
  // whose descriptor has a pointer its epilogue does not use: only a used one is set.
  if (operands.bias != nullptr) {
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                &operands.bias, sizeof(operands.bias)));
  }
  cudaEvent_t start = nullptr, stop = nullptr;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  const float alpha = 1.f;  // beta: the product's own (0 or 1), so its C reads are timed too
  auto run = [&](size_t i) {
    return cublasLtMatmul(handle_, plan.desc, &alpha, operands.a, plan.a, operands.b, plan.b, &beta,
                          d, plan.d, d, plan.d, &results[i].algo, workspace_, workspace_bytes_,
                          stream_) == CUBLAS_STATUS_SUCCESS;
  };
  std::vector<bool> runs(results.size(), false);
  for (size_t i = 0; i < results.size(); ++i) {
    runs[i] = results[i].state == CUBLAS_STATUS_SUCCESS;
    for (int r = 0; r < kWarmup && runs[i]; ++r) runs[i] = run(i);
  }
  std::vector<float> us(results.size(), -1.f);  // -1: the algorithm failed to run
  for (int round = 0; round < kRounds; ++round) {
    for (size_t i = 0; i < results.size(); ++i) {
      if (!runs[i]) continue;
      CUDA_CHECK(cudaEventRecord(start, stream_));
      for (int r = 0; r < kTimed && runs[i]; ++r) runs[i] = run(i);
      CUDA_CHECK(cudaEventRecord(stop, stream_));
      CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0.f;
      CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      const float round_us = 1000.f * ms / kTimed;
      us[i] = !runs[i] ? -1.f : us[i] < 0.f ? round_us : std::min(us[i], round_us);
    }
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  if (scratch_d != nullptr) CUDA_CHECK(cudaFree(scratch_d));
  return us;
}

void Matmul::choose_algorithm(Plan& plan, const std::string& name, const Operands& operands, long n,
                              bool d_is_f32, float beta) {
  const std::vector<cublasLtMatmulHeuristicResult_t> results = candidates(plan);
  const int offered = static_cast<int>(results.size());
  if (const AlgoChoice* kept = algos_->find(name)) {
    if (kept->candidates != offered) {
      cuda_fatal(algos_->source().c_str(),
                 ("file '" + algos_->path() + "' chose candidate #" + std::to_string(kept->index) +
                  " of " + std::to_string(kept->candidates) + " for GEMM " + name +
                  ", but cuBLASLt offers " + std::to_string(offered) +
                  " here (delete the file to time them again)")
                     .c_str(),
                 __FILE__, __LINE__);
    }
    plan.heuristic = results[static_cast<size_t>(kept->index)];
    return;
  }
  const std::vector<float> us = time_candidates(plan, results, operands, n, d_is_f32, beta);
  const int fastest = fastest_candidate(us);
  if (fastest < 0) return;  // none ran when timed: keep the heuristic's first, record nothing
  // Another process of the job may have kept a choice for this shape meanwhile: take it.
  const AlgoChoice kept = algos_->record(name, AlgoChoice{fastest, offered}, us);
  plan.heuristic = results[static_cast<size_t>(kept.index)];
}

void Matmul::report_candidates(Plan& plan, const std::string& shape, const Operands& operands,
                               long n, bool d_is_f32, float beta) {
  const std::vector<cublasLtMatmulHeuristicResult_t> results = candidates(plan);
  const int returned = static_cast<int>(results.size());
  const std::vector<float> us = time_candidates(plan, results, operands, n, d_is_f32, beta);
  const int best = fastest_candidate(us);
  std::string times;
  for (int i = 0; i < returned; ++i) {
    char cell[32];
    std::snprintf(cell, sizeof(cell), "%s%.1f", i ? " " : "", us[i]);
    times += cell;
  }
  FILE* file = std::fopen(report_path_.c_str(), "a");
  if (file == nullptr) {
    cuda_fatal("ACCUM_CUBLASLT_REPORT",
               ("cannot append to '" + report_path_ + "' (expected a writable file path)").c_str(),
               __FILE__, __LINE__);
  }
  if (std::ftell(file) == 0) {
    std::fprintf(file,
                 "| m x n x k | op(A) op(B) | D | beta | epilogue | alignment A/B/D | us of the "
                 "heuristic's algorithms, in its order | first | best | best is | first / best "
                 "|\n|---|---|---|---|---|---|---|---|---|---|---|\n");
  }
  if (best < 0 || us[0] <= 0.f) {
    std::fprintf(file, "| %s | %s | %.1f | - | - | - |\n", shape.c_str(), times.c_str(), us[0]);
  } else {
    std::fprintf(file, "| %s | %s | %.1f | %.1f | #%d | %.3f |\n", shape.c_str(), times.c_str(),
                 us[0], us[best], best, us[0] / us[best]);
  }
  std::fclose(file);
}

void Matmul::forward(__nv_bfloat16* out, const __nv_bfloat16* inp, const __nv_bfloat16* weight,
                     const __nv_bfloat16* bias, int N, int C, int OC, WeightLayout layout,
                     int out_ld) {
  // out^T(OC,N) = op(W)(OC,C) x inp^T(C,N); W as stored is (OC,C) col-major for kInOut
  // (ld OC) and (C,OC) col-major for kOutIn (ld C, transposed).
  const bool in_out = layout == WeightLayout::kInOut;
  gemm(out, false, out_ld, weight, !in_out, in_out ? OC : C, inp, false, C, OC, N, C, 0.f, bias);
}

void Matmul::forward_gelu(__nv_bfloat16* out, __nv_bfloat16* pre, const __nv_bfloat16* inp,
                          const __nv_bfloat16* weight, const __nv_bfloat16* bias, int N, int C,
                          int OC, WeightLayout layout) {
  const bool in_out = layout == WeightLayout::kInOut;
  if (gelu_fusion_allowed(OC, pre) &&
      gemm(out, false, OC, weight, !in_out, in_out ? OC : C, inp, false, C, OC, N, C, 0.f, bias,
           Epilogue::kGeluAux, pre)) {
    return;
  }
  forward(pre, inp, weight, bias, N, C, OC, layout, OC);
  gelu_forward(out, pre, static_cast<size_t>(N) * OC, stream_);
}

void Matmul::backward_gelu(__nv_bfloat16* dpre, float* dweight, float* dbias,
                           const __nv_bfloat16* dout, const __nv_bfloat16* inp,
                           const __nv_bfloat16* pre, const __nv_bfloat16* weight, int N, int C,
                           int OC, WeightLayout layout, GradMode mode, DeviceScratch& scratch) {
  const bool in_out = layout == WeightLayout::kInOut;
  // dpre^T(C,N) = op(W)(C,OC) x dout^T(OC,N), then * gelu'(pre) — beta 0: written.
  const bool fused =
      gelu_fusion_allowed(C, pre) && gemm(dpre, false, C, weight, in_out, in_out ? OC : C, dout,
                                          false, OC, C, N, OC, 0.f, nullptr, Epilogue::kDGelu, pre);
  if (!fused) {
    gemm(dpre, false, C, weight, in_out, in_out ? OC : C, dout, false, OC, C, N, OC, 0.f, nullptr);
    gelu_backward_inplace(dpre, pre, static_cast<size_t>(N) * C, stream_);
  }
  backward(nullptr, dweight, dbias, dout, inp, weight, N, C, OC, layout, mode, OC, scratch);
}

void Matmul::backward(__nv_bfloat16* dinp, float* dweight, float* dbias, const __nv_bfloat16* dout,
                      const __nv_bfloat16* inp, const __nv_bfloat16* weight, int N, int C, int OC,
                      WeightLayout layout, GradMode mode, int dout_ld, DeviceScratch& scratch) {
  const bool in_out = layout == WeightLayout::kInOut;
  const float beta = mode == GradMode::kAdd ? 1.f : 0.f;  // dweight: added or written
  if (dinp != nullptr) {
    // dinp^T(C,N) = op(W)(C,OC) x dout^T(OC,N) — beta 0: written, C is never read.
    gemm(dinp, false, C, weight, in_out, in_out ? OC : C, dout, false, dout_ld, C, N, OC, 0.f,
         nullptr);
  }
  if (dweight != nullptr) {
    if (in_out) {
      // dW (C,OC) row-major = (OC,C) col-major: dW^T (+)= dout^T(OC,N) x inp(N,C). A = dout^T,
      // so BGRADA's sum of A over k (the N rows) is exactly dbias: one pass over dout less.
      // The epilogue writes its sum: straight into dbias (kWrite, where dbias has the 16-byte
      // alignment cuBLASLt's epilogue vectors need), else to scratch, then added or copied.
      if (dbias != nullptr && bgrad_fusion_) {
        const bool direct =
            mode == GradMode::kWrite && (reinterpret_cast<uintptr_t>(dbias) & 15u) == 0;
        const size_t bytes = sizeof(float) * static_cast<size_t>(OC);
        float* bgrad =
            direct ? dbias : static_cast<float*>(scratch.get(ScratchSlot::kBiasGrad, bytes));
        if (gemm(dweight, true, OC, dout, false, dout_ld, inp, true, C, OC, C, N, beta, bgrad,
                 Epilogue::kBGradA)) {
          if (mode == GradMode::kAdd) {
            add_f32(dbias, bgrad, static_cast<size_t>(OC), stream_);
          } else if (!direct) {
            CUDA_CHECK(cudaMemcpyAsync(dbias, bgrad, bytes, cudaMemcpyDeviceToDevice, stream_));
          }
          return;
        }
      }
      gemm(dweight, true, OC, dout, false, dout_ld, inp, true, C, OC, C, N, beta, nullptr);
    } else {
      // dW (OC,C) row-major = (C,OC) col-major: dW^T (+)= inp^T(C,N) x dout(N,OC). An OC that
      // is not a multiple of 8 (GPT-2's vocabulary, 50257) leaves cuBLASLt only slower kernels
      // for the whole product (1.22 ms instead of 0.81 on an H200, RESULTS 4.19): the columns
      // up to the last multiple of 64 go to one product, the few after them to another.
      const int head = split_ragged_ && OC % 8 != 0 && OC > 64 ? OC / 64 * 64 : OC;
      gemm(dweight, true, C, inp, false, C, dout, true, dout_ld, C, head, N, beta, nullptr);
      if (head < OC) {
        gemm(dweight + static_cast<size_t>(head) * C, true, C, inp, false, C, dout + head, true,
             dout_ld, C, OC - head, N, beta, nullptr);
      }
    }
  }
  if (dbias != nullptr) column_sum(dbias, dout, N, OC, dout_ld, mode, scratch, stream_);
}

}  // namespace accum::kernels::cuda
