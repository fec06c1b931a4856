// kernels/cuda/matmul.h — linear layers on cuBLASLt (CPU twin: kernels/cpu/matmul.cpp).
//
//   forward:  out(N,OC) = inp(N,C) @ W + bias      W (C,OC) kInOut | W^T with W (OC,C) kOutIn
//   (out's and dout's rows may lie further apart than OC: out_ld, dout_ld, the logits' padded
//   rows; cuBLASLt then keeps its 16-byte-aligned kernels for an odd vocabulary. A kOutIn
//   dweight with OC not a multiple of 8 runs as two products, the rows up to the last multiple
//   of 64 and the rest: one product over an odd OC gets slower kernels; ACCUM_CUBLASLT_SPLIT=0
//   turns the split off)
//   backward: dinp(N,C)    = dout @ W^T (kInOut) | dout @ W (kOutIn)       bf16, beta = 0
//             dweight    (+)= inp^T @ dout (C,OC) | dout^T @ inp (OC,C)    fp32, beta = 1 | 0
//             dbias(OC)  (+)= sum_rows dout                                fp32, column_sum
//             (+= for GradMode::kAdd, = for kWrite, the first micro-batch of a window.
//             ACCUM_CUBLASLT_BGRAD=1: the dweight GEMM's BGRADA epilogue writes
//             sum_rows dout into dbias (kWrite) or to scratch, then add_f32 (kAdd) — an
//             ablation, not yet measured)
//
//   forward_gelu:  pre = inp @ W + bias, out = gelu(pre)         GELU_AUX(_BIAS) epilogue
//   backward_gelu: dpre = (dout @ W^T) * gelu'(pre), written      DGELU epilogue, beta = 0
//
// bf16 A/B, fp32 accumulation (CUBLAS_COMPUTE_32F); the forward adds the bias in the
// epilogue; the weight gradient is written by cuBLASLt straight into the fp32 gradient
// buffer (beta = 0 for a window's first micro-batch, then 1), so K micro-batches accumulate
// in fp32, never in bf16, and the buffer is never zeroed.
// Row-major (R, S) data is column-major (S, R): every product is computed transposed,
// e.g. out^T(OC,N) = op(W)(OC,C) x inp^T(C,N).
//
// Thread safety: none; one Matmul per back end. Plans (descriptors + the heuristic's
// algorithm) are cached per shape, so the heuristic runs once per distinct GEMM and the
// same shape always runs the same algorithm (reproducible bits). With a kept-choices file
// (ACCUM_CUBLASLT_ALGOS=FILE, or the spec's cuda.keep_cublaslt_algorithms) the algorithm is
// the fastest of the heuristic's first 8, timed once and kept in the file for every later run
// (matmul_algos.h).
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda/matmul_algos.h"
#include "kernels/cuda/scratch.h"

namespace accum::kernels::cuda {

class Matmul {
 public:
  // `algorithms_dir`: the folder where cuBLASLt's choices are kept, in this machine's file
  // (algo_file_name), "" for none, named in messages as `algorithms_source`;
  // ACCUM_CUBLASLT_ALGOS, when set, names the file instead.
  explicit Matmul(cudaStream_t stream, const std::string& algorithms_dir = "",
                  const std::string& algorithms_source = "");
  ~Matmul();
  Matmul(const Matmul&) = delete;
  Matmul& operator=(const Matmul&) = delete;
  // The file of kept algorithm choices in use, "" for none.
  std::string algorithms_file() const { return algos_ ? algos_->path() : std::string(); }

  // Rows of out are out_ld (>= OC) elements apart.
  void forward(__nv_bfloat16* out, const __nv_bfloat16* inp, const __nv_bfloat16* weight,
               const __nv_bfloat16* bias, int N, int C, int OC, WeightLayout layout, int out_ld);
  // pre = inp @ W + bias; out = gelu(pre) — cuBLASLt's GELU_AUX(_BIAS) epilogue (gelu of the
  // fp32 sum; pre is its aux output), else matmul then the gelu kernel.
  void forward_gelu(__nv_bfloat16* out, __nv_bfloat16* pre, const __nv_bfloat16* inp,
                    const __nv_bfloat16* weight, const __nv_bfloat16* bias, int N, int C, int OC,
                    WeightLayout layout);
  // dpre = (dout @ W^T) * gelu'(pre), WRITTEN (beta 0) — cuBLASLt's DGELU epilogue, else the
  // GEMM then gelu_backward_inplace; dweight/dbias as backward() with inp = gelu(pre).
  void backward_gelu(__nv_bfloat16* dpre, float* dweight, float* dbias, const __nv_bfloat16* dout,
                     const __nv_bfloat16* inp, const __nv_bfloat16* pre,
                     const __nv_bfloat16* weight, int N, int C, int OC, WeightLayout layout,
                     GradMode mode, DeviceScratch& scratch);
  // dinp / dweight / dbias may each be null (that gradient is not wanted); dweight and dbias
  // are added to (GradMode::kAdd: beta 1) or written (kWrite: beta 0). Rows of dout are
  // dout_ld (>= OC) elements apart.
  void backward(__nv_bfloat16* dinp, float* dweight, float* dbias, const __nv_bfloat16* dout,
                const __nv_bfloat16* inp, const __nv_bfloat16* weight, int N, int C, int OC,
                WeightLayout layout, GradMode mode, int dout_ld, DeviceScratch& scratch);

 private:
  struct Plan;
  // What runs after the product: kGeluAux: aux = sum, D = gelu(aux); kDGelu: D = sum *
  // gelu'(aux) (aux is read; (m,n) with ld m, like D).
  // kBGradA: `bias` is an OUTPUT, fp32 (m): the sum of op(A) over k, written.
  enum class Epilogue { kNone, kGeluAux, kDGelu, kBGradA };
  // Column-major D(m,n) = epilogue(op(A) op(B) + beta * D (+ bias(m) broadcast over columns)).
  // A is stored (m,k) or, if trans_a, (k,m); likewise B (k,n) or (n,k). Each operand comes
  // with its leading dimension (ldd >= m: the GELU aux matrix, when used, has ld m).
  // Returns false only for an epilogue cuBLASLt has no algorithm for (the caller then runs
  // the unfused ops); a plain GEMM without an algorithm is fatal.
  bool gemm(void* d, bool d_is_f32, long ldd, const void* a, bool trans_a, long lda, const void* b,
            bool trans_b, long ldb, long m, long n, long k, float beta, const void* bias,
            Epilogue epilogue = Epilogue::kNone, const void* aux = nullptr);
  // What one product reads and writes, as gemm() was given them: the timed runs use them.
  struct Operands {
    const void* a;
    const void* b;
    void* d;
    const void* bias;  // the bias vector (BGRADA: its output), null without one
    const void* aux;   // the GELU aux matrix, null when the epilogue uses none
  };
  // ACCUM_CUBLASLT_REPORT=FILE (a benchmark's switch): when a plan is made, up to 8 of the
  // heuristic's algorithms for it are each timed (time_candidates), and one markdown row per
  // plan (shape and operand alignments) is appended to FILE: the times in the heuristic's order,
  // its first, the best and their ratio. The product itself still runs the algorithm it would
  // run without the switch (same bits); the timing syncs the stream.
  void report_candidates(Plan& plan, const std::string& shape, const Operands& operands, long n,
                         bool d_is_f32, float beta);
  // ACCUM_CUBLASLT_ALGOS=FILE: sets plan.heuristic to the candidate FILE names for `name`, or
  // times the candidates, takes the fastest and records it in FILE.
  void choose_algorithm(Plan& plan, const std::string& name, const Operands& operands, long n,
                        bool d_is_f32, float beta);
  // Up to 8 of the heuristic's candidates for `plan`, in its order.
  std::vector<cublasLtMatmulHeuristicResult_t> candidates(const Plan& plan);
  // Each candidate's µs per product (cudaEvents; the best of 3 rounds of 5 runs, the rounds
  // interleaved over the candidates, after 2 runs each; the product's own beta); -1 for one that
  // failed to run. Syncs the stream. With beta 0 the runs write the caller's D (and aux or
  // BGRADA output), which the product itself then writes again: no copy of a logits-sized
  // output outside the memory plan. With beta 1 D is a zeroed scratch copy (parameter-sized:
  // dW); throws std::bad_alloc when the device has no room for it.
  std::vector<float> time_candidates(Plan& plan,
                                     const std::vector<cublasLtMatmulHeuristicResult_t>& results,
                                     const Operands& operands, long n, bool d_is_f32, float beta);
  static const char* epilogue_name(Epilogue epilogue, bool bias);
  // Whether a GELU epilogue may be tried for a (rows, ld) aux matrix at `aux`.
  bool gelu_fusion_allowed(long ld, const void* aux) const;

  using Key = std::tuple<long, long, long, long, long, long, bool, bool, bool, bool, bool, int, int,
                         int, int, int>;
  cudaStream_t stream_;
  bool gelu_fusion_ = true;    // ACCUM_CUBLASLT_GELU=0 turns the GELU epilogues off (A/B runs)
  bool bgrad_fusion_ = false;  // ACCUM_CUBLASLT_BGRAD=1 turns the bias-gradient epilogue on
  bool split_ragged_ = true;   // ACCUM_CUBLASLT_SPLIT=0: one dW product for a ragged OC (A/B)
  std::string report_path_;    // ACCUM_CUBLASLT_REPORT: report_candidates' file, or empty
  std::unique_ptr<AlgoTable> algos_;  // the kept choices (file or ACCUM_CUBLASLT_ALGOS), or null
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace accum::kernels::cuda
