#!/usr/bin/env bash
# bench/gpu.sh — one command for a GPU host: build the CUDA back end standalone, run the
# gpu tests, benchmark GPT-2 124M (T=1024, bf16) against PyTorch, write the results.
#
# Needs only: CUDA (nvcc, cuBLAS), CMake >= 3.18, a C++20 host compiler, and for the
# reference PyTorch with CUDA. No protobuf/gRPC/MPI/OpenBLAS/spdlog/GoogleTest needed
# (bench/gpu/CMakeLists.txt falls back to naive_blas/ and minigtest/ when absent).
#
# Environment knobs (all optional):
#   ACCUM_GPU_BUILD=DIR       build directory (default: <repo>/build-gpu)
#   ACCUM_CUDA_ARCHS="90"     architectures (default: the visible GPU's, else "80;90")
#   ACCUM_BENCH_BATCH=8       micro-batch B;  ACCUM_BENCH_STEPS=20 timed steps
#   ACCUM_BENCH_BATCHES="16 32"  more micro-batches for accum-cuda alone: MFU as B grows ("" skips)
#   ACCUM_BENCH_K="1 8 64"    grad_accum values for the K-scaling run ("" skips it)
#   ACCUM_BENCH_K_ROUNDS=3    its timed rounds
#   ACCUM_SKIP_TORCH=1        skip the PyTorch reference;  PYTHON=python3  interpreter
#   ACCUM_BENCH_1P3B=0        skip the 1.3B (d_model 2048, T 2048) largest-batch run
#   ACCUM_BENCH_GEMM_REPORT=0 skip the table of cuBLASLt's candidate algorithms per GEMM
#   ACCUM_BENCH_VOCAB=50257   the vocabulary of the run that sets the preset's unpadded
#                             vocabulary against the padded 50304 ("" skips it)
#   ACCUM_PEAK_TFLOPS=989     peak dense bf16 TFLOP/s for MFU when the card is not known
# Knobs for a dry run of this script (tests/simt/gpu_sh_dry_run.sh runs it on the SIMT
# emulator with a tiny model in CI, so the lease of a real GPU is not spent on its bugs):
#   ACCUM_GPU_BIN=DIR         use DIR/gpu_test and DIR/gpt2_bench as built; skip the build
#   ACCUM_GPU_TEST_ARGS=...   arguments for gpu_test (e.g. --gtest_filter=...)
#   ACCUM_BENCH_SEQ=1024      sequence length of the 124M runs
#   ACCUM_BENCH_MODEL=...     gpt2_bench model flags for those runs (default: GPT-2 124M)
#   ACCUM_BENCH_LARGE=...     gpt2_bench model flags of the large run (default: the 1.3B)
#   ACCUM_BENCH_LARGE_B="32 24 16 14 12 10 8 6 4 2 1"  micro-batches tried, largest first
#   ACCUM_BENCH_LARGE_MIB=81559  device memory the large run may use (an H100 80GB's; the
#                             rest of a larger card is held back; 0 = the whole card)
#   ACCUM_GPU_TEST_TIMEOUT=900  seconds the gpu tests may take
#   ACCUM_BENCH_NCU=1         also time each kernel of one 2-layer step under ncu
#   ACCUM_BENCH_NCU_DETAIL=1  and ncu's pipe, stall and occupancy sections for the largest ones,
#                             and a table of every one of our kernels' stall reasons (ncu_stalls.md)
#   ACCUM_BENCH_NSYS=1        GPU idle time between operations (nsys, bench/gpu/gpu_gaps.py)
#   ACCUM_BENCH_OUT=DIR       output folder;  ACCUM_RESULTS=FILE  where the summary is appended
# Output: bench/out/gpu-<date>/ (logs, JSON) and summary.md, appended to bench/RESULTS.md.
# Exit status: non-zero if the build or any gpu test failed, or the benchmark did not learn.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${ACCUM_GPU_BUILD:-$ROOT/build-gpu}"
STAMP="$(date +%Y%m%d-%H%M%S)"
OUT="${ACCUM_BENCH_OUT:-$ROOT/bench/out/gpu-$STAMP}"
RESULTS_FILE="${ACCUM_RESULTS:-$ROOT/bench/RESULTS.md}"
BATCH="${ACCUM_BENCH_BATCH:-8}"
SEQ="${ACCUM_BENCH_SEQ:-1024}"
read -r -a MODEL <<< "${ACCUM_BENCH_MODEL:-}"
read -r -a LARGE_MODEL <<< "${ACCUM_BENCH_LARGE:---layers 24 --heads 16 --dmodel 2048 --seq 2048}"
read -r -a GPU_TEST_ARGS <<< "${ACCUM_GPU_TEST_ARGS:-}"
STEPS="${ACCUM_BENCH_STEPS:-20}"
K_VALUES="${ACCUM_BENCH_K-1 8 64}"
PYTHON="${PYTHON:-python3}"
COMMAND="bench/gpu.sh (ACCUM_BENCH_BATCH=$BATCH ACCUM_BENCH_STEPS=$STEPS)"
mkdir -p "$OUT"
status=0

log() { printf '\n== %s %s\n' "$(date +%T)" "$*" | tee -a "$OUT/gpu.log"; }
die() { printf 'gpu.sh: %s\n' "$*" | tee -a "$OUT/gpu.log" >&2; exit 1; }

# ---- toolchain (only to build) ----
if [[ -z "${ACCUM_GPU_BIN:-}" ]]; then
  if [[ -z "${CUDACXX:-}" ]]; then
    if command -v nvcc >/dev/null 2>&1; then CUDACXX="$(command -v nvcc)"
    elif [[ -x /usr/local/cuda/bin/nvcc ]]; then CUDACXX=/usr/local/cuda/bin/nvcc
    else die "nvcc not found: install CUDA or set CUDACXX=/path/to/nvcc"; fi
  fi
  export CUDACXX
  command -v cmake >/dev/null 2>&1 || die "cmake not found (pip install cmake works too)"
fi

CARD="unknown GPU"
if command -v nvidia-smi >/dev/null 2>&1; then
  CARD="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)"
  if [[ -z "${ACCUM_CUDA_ARCHS:-}" ]]; then
    cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d '. ')"
    [[ "$cap" =~ ^[0-9]+$ ]] && ACCUM_CUDA_ARCHS="$cap"
  fi
  nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
else
  echo "gpu.sh: nvidia-smi not found; the tests will report SKIPPED if no GPU is visible" | tee -a "$OUT/gpu.log"
fi
ACCUM_CUDA_ARCHS="${ACCUM_CUDA_ARCHS:-80;90}"
GENERATOR=()
command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)
JOBS="$(nproc 2>/dev/null || echo 4)"

# ---- build ----
if [[ -n "${ACCUM_GPU_BIN:-}" ]]; then
  BIN="$ACCUM_GPU_BIN"
  log "using the binaries in $BIN (ACCUM_GPU_BIN): no build"
else
  BIN="$BUILD/bin"
  log "configure ($CARD, archs $ACCUM_CUDA_ARCHS) in $BUILD"
  cmake -S "$ROOT/bench/gpu" -B "$BUILD" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_COMPILER="$CUDACXX" -DACCUM_CUDA_ARCHS="$ACCUM_CUDA_ARCHS" \
    -DCMAKE_CUDA_ARCHITECTURES="$ACCUM_CUDA_ARCHS" 2>&1 | tee "$OUT/configure.log"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || die "configure failed (see $OUT/configure.log)"
  log "build (-j$JOBS)"
  build_start=$(date +%s)
  cmake --build "$BUILD" -j "$JOBS" 2>&1 | tee "$OUT/build.log"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || die "build failed (see $OUT/build.log)"
  echo "build took $(( $(date +%s) - build_start )) s" | tee -a "$OUT/gpu.log"
fi

# ---- gpu tests ----
log "gpu tests"
timeout "${ACCUM_GPU_TEST_TIMEOUT:-900}" "$BIN/gpu_test" "${GPU_TEST_ARGS[@]}" 2>&1 | tee "$OUT/gpu_test.log"
test_rc=${PIPESTATUS[0]}
passed=$(grep -c '^\[       OK \]' "$OUT/gpu_test.log")
failed=$(grep -c '^\[  FAILED  \] [A-Za-z]' "$OUT/gpu_test.log")
skipped=$(grep -c '^\[  SKIPPED \] [A-Za-z]' "$OUT/gpu_test.log")
TESTS="$passed passed, $failed failed, $skipped skipped (exit $test_rc)"
echo "gpu tests: $TESTS" | tee -a "$OUT/gpu.log"
[[ $test_rc -eq 0 && $failed -eq 0 ]] || status=1
if [[ $skipped -gt 0 && $passed -eq 0 ]]; then
  grep -m1 -A1 'Skipped' "$OUT/gpu_test.log" || true
  die "no GPU visible to the tests: nothing to benchmark"
fi

# ---- benchmark: accum CUDA back end ----
log "accum-cuda GPT-2 ${MODEL[*]:-124M}, B=$BATCH T=$SEQ"
"$BIN/gpt2_bench" "${MODEL[@]}" --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" --warmup 5 \
  --out "$OUT/accum.json" 2> "$OUT/accum_bench.log"
bench_rc=$?
tail -n 3 "$OUT/accum_bench.log"
[[ $bench_rc -eq 0 ]] || { echo "gpt2_bench exit $bench_rc (see $OUT/accum_bench.log)"; status=1; }

# ---- benchmark: PyTorch reference ----
RESULTS=()
[[ -s "$OUT/accum.json" ]] && RESULTS+=("$OUT/accum.json")
if [[ "${ACCUM_SKIP_TORCH:-0}" != 1 ]] && command -v "$PYTHON" >/dev/null 2>&1 &&
   "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  log "PyTorch (torch.compile + SDPA + fused AdamW), B=$BATCH T=$SEQ"
  "$PYTHON" "$ROOT/bench/gpu/torch_gpt2.py" "${MODEL[@]}" --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" \
    --warmup 5 --out "$OUT/torch.json" 2> "$OUT/torch_bench.log"
  torch_rc=$?
  tail -n 3 "$OUT/torch_bench.log"
  if [[ $torch_rc -eq 0 ]]; then RESULTS+=("$OUT/torch.json")
  else echo "torch_gpt2.py exit $torch_rc (see $OUT/torch_bench.log)"; fi
else
  echo "PyTorch with CUDA not available to $PYTHON: reference skipped" | tee -a "$OUT/gpu.log"
fi

# Before/after for each optimization: the same run with it switched off (ACCUM_CUDA_GRAPHS=0:
# each micro-step's forward and backward layers launched op by op, not as CUDA graphs); and
# candidates not the default, switched on (ACCUM_ATTENTION=mma_dkdv32: 32-query dK/dV steps;
# ACCUM_ATTENTION=mma_fwd128: the attention forward in blocks of 128 queries;
# ACCUM_CUBLASLT_BGRAD=1: bias gradients from the weight-gradient GEMM's BGRADA epilogue).
# ACCUM_LAYERNORM_GRADS=two_pass: LayerNorm dweight/dbias in a pass of their own.
# ACCUM_ATTENTION_HEAD_GROUP: attention blocks longest first within groups of 48 heads
# (half the K and V in L2 at once), or 1: head by head, the order up to RESULTS 4.9.
# ACCUM_CUBLASLT_ALGOS: cuBLASLt's algorithms timed in the warm-up and kept (opt-in; RESULTS
# 4.16), in a file of this run's own.
# ACCUM_CUDA_SIDE_STREAM=1: the backward's weight-gradient products on a second stream, beside
# the activation-gradient chain, below the main stream's priority (a candidate; RESULTS 4.20);
# =equal: the same at equal priorities.
ABLATIONS=()
for ablation in ACCUM_ATTENTION=simple ACCUM_CUBLASLT_GELU=0 ACCUM_ATTENTION=mma_dkdv32 \
                ACCUM_ATTENTION=mma_fwd128 ACCUM_CUDA_GRAPHS=0 ACCUM_CUBLASLT_BGRAD=1 \
                ACCUM_CUDA_SIDE_STREAM=1 ACCUM_CUDA_SIDE_STREAM=equal \
                ACCUM_LAYERNORM_GRADS=two_pass \
                ACCUM_ATTENTION_HEAD_GROUP=48 ACCUM_ATTENTION_HEAD_GROUP=1 \
                "ACCUM_CUBLASLT_ALGOS=$OUT/cublaslt_algos.tsv"; do
  name="${ablation//[^A-Za-z0-9]/_}"
  log "accum-cuda with $ablation (ablation)"
  # shellcheck disable=SC2086  # an entry may set several variables
  env $ablation "$BIN/gpt2_bench" "${MODEL[@]}" --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" --warmup 5 \
    --out "$OUT/accum_$name.json" 2> "$OUT/accum_$name.log" &&
    ABLATIONS+=("$ablation=$OUT/accum_$name.json")
  tail -n 1 "$OUT/accum_$name.log"
done

# The vocabulary a spec's GPT-2 preset trains (50257: odd; accum-cuda runs its LM head over
# 50304 padded rows, RESULTS 4.19), against the padded 50304 of the rows above, for
# accum-cuda and PyTorch: what an unpadded vocabulary costs each (ACCUM_BENCH_VOCAB="" skips
# it).
VOCAB_RUNS=()
BENCH_VOCAB="${ACCUM_BENCH_VOCAB-50257}"
if [[ -n "$BENCH_VOCAB" ]]; then
  log "accum-cuda GPT-2 ${MODEL[*]:-124M} at V=$BENCH_VOCAB, B=$BATCH T=$SEQ"
  "$BIN/gpt2_bench" "${MODEL[@]}" --vocab "$BENCH_VOCAB" --batch "$BATCH" --seq "$SEQ" \
    --steps "$STEPS" --warmup 5 --out "$OUT/accum_v$BENCH_VOCAB.json" 2> "$OUT/accum_v$BENCH_VOCAB.log" &&
    VOCAB_RUNS+=("$OUT/accum_v$BENCH_VOCAB.json")
  tail -n 1 "$OUT/accum_v$BENCH_VOCAB.log"
  if [[ -s "$OUT/torch.json" ]]; then
    log "PyTorch at V=$BENCH_VOCAB, B=$BATCH T=$SEQ"
    "$PYTHON" "$ROOT/bench/gpu/torch_gpt2.py" "${MODEL[@]}" --vocab "$BENCH_VOCAB" --batch "$BATCH" \
      --seq "$SEQ" --steps "$STEPS" --warmup 5 --out "$OUT/torch_v$BENCH_VOCAB.json" \
      2> "$OUT/torch_v$BENCH_VOCAB.log" && VOCAB_RUNS+=("$OUT/torch_v$BENCH_VOCAB.json")
    tail -n 1 "$OUT/torch_v$BENCH_VOCAB.log"
  fi
fi

# The same model at larger micro-batches (accum-cuda only): what MFU the card gives once the
# optimizer and the other per-step costs weigh less. Out of memory (exit 5) ends the list.
BATCHES=()
for b in ${ACCUM_BENCH_BATCHES-16 32}; do
  log "accum-cuda GPT-2 ${MODEL[*]:-124M}, B=$b T=$SEQ (micro-batch sweep)"
  "$BIN/gpt2_bench" "${MODEL[@]}" --batch "$b" --seq "$SEQ" --steps "$STEPS" --warmup 5 \
    --out "$OUT/accum_b$b.json" 2> "$OUT/accum_b$b.log"
  batch_rc=$?
  tail -n 1 "$OUT/accum_b$b.log"
  [[ $batch_rc -eq 0 ]] && { BATCHES+=("$OUT/accum_b$b.json"); continue; }
  echo "gpt2_bench exit $batch_rc at B=$b (see $OUT/accum_b$b.log)"
  [[ $batch_rc -eq 5 ]] || status=1
  break
done

# K scaling in one process: blocks of max(K)/K steps per K, alternating for 3 rounds, so
# that drift in the card's clocks hits every K alike (gpt2_bench --k-scaling).
SCALING=()
if [[ -n "$K_VALUES" ]]; then
  log "accum-cuda K scaling (K = $K_VALUES, interleaved)"
  if "$BIN/gpt2_bench" "${MODEL[@]}" --batch "$BATCH" --seq "$SEQ" --k-scaling "${K_VALUES// /,}" \
       --rounds "${ACCUM_BENCH_K_ROUNDS:-3}" --out "$OUT/accum_kscaling.json" 2> "$OUT/accum_kscaling.log"; then
    SCALING+=("$OUT/accum_kscaling.json")
  else
    echo "gpt2_bench exit $? in the K scaling run (see $OUT/accum_kscaling.log)"; status=1
  fi
fi

# ---- cuBLASLt's candidate algorithms for every GEMM shape of the model (one step of 2
# layers: the layers repeat), each timed on scratch outputs: whether the heuristic's first
# pick, which the product always runs, leaves time on the table ----
if [[ "${ACCUM_BENCH_GEMM_REPORT:-1}" == 1 ]]; then
  log "cuBLASLt candidates per GEMM shape (ACCUM_CUBLASLT_REPORT), 2 layers, B=$BATCH T=$SEQ"
  rm -f "$OUT/gemm_algos.md"
  ACCUM_CUBLASLT_REPORT="$OUT/gemm_algos.md" "$BIN/gpt2_bench" "${MODEL[@]}" --layers 2 \
    --batch "$BATCH" --seq "$SEQ" --steps 1 --warmup 0 > /dev/null 2> "$OUT/gemm_algos.log" ||
    echo "gpt2_bench exit $? in the cuBLASLt candidate run (see $OUT/gemm_algos.log)"
fi

# ---- the note's 1.3B configuration: the largest micro-batch that fits, its speed, and its
# memory (allocated by the model = the memory arithmetic, vs cudaMemGetInfo) ----
LARGE=()
if [[ "${ACCUM_BENCH_1P3B:-1}" == 1 ]]; then
  LARGE_MIB="${ACCUM_BENCH_LARGE_MIB:-81559}"
  for b in ${ACCUM_BENCH_LARGE_B:-32 24 16 14 12 10 8 6 4 2 1}; do
    log "accum-cuda large run (${LARGE_MODEL[*]}), B=$b, device memory ${LARGE_MIB} MiB"
    "$BIN/gpt2_bench" "${LARGE_MODEL[@]}" --batch "$b" --device-mib "$LARGE_MIB" \
      --steps 3 --warmup 1 --out "$OUT/accum_1p3b.json" 2> "$OUT/accum_1p3b_b$b.log"
    large_rc=$?
    tail -n 2 "$OUT/accum_1p3b_b$b.log"
    [[ $large_rc -eq 0 ]] && { LARGE=(--large "$OUT/accum_1p3b.json"); break; }
    rm -f "$OUT/accum_1p3b.json"
    # 5: out of device memory, try a smaller micro-batch; anything else is a failure.
    [[ $large_rc -eq 5 ]] || { echo "gpt2_bench exit $large_rc at B=$b"; status=1; break; }
  done
fi

# ---- summary (before the profilers: a profiler that runs out of time costs only its own table) ----
if [[ ${#RESULTS[@]} -gt 0 ]] && [[ "${RESULTS[0]}" == "$OUT/accum.json" ]]; then
  "$PYTHON" "$ROOT/bench/gpu/summarize.py" --card "$CARD" --command "$COMMAND" --tests "$TESTS" \
    --out "$OUT/summary.md" "${RESULTS[@]}" --scaling "${SCALING[@]}" --ablation "${ABLATIONS[@]}" \
    --batches "${BATCHES[@]}" --vocab-runs "${VOCAB_RUNS[@]}" "${LARGE[@]}"
  if [[ -s "$OUT/gemm_algos.md" ]]; then
    { echo; echo "cuBLASLt's candidate algorithms per GEMM shape, us (ACCUM_CUBLASLT_REPORT):"
      echo; cat "$OUT/gemm_algos.md"; } >> "$OUT/summary.md"
  fi
  if [[ -s "$OUT/summary.md" ]]; then
    { echo; cat "$OUT/summary.md"; } >> "$RESULTS_FILE"
    echo "results: $OUT/summary.md (appended to $RESULTS_FILE)"
  fi
else
  echo "no benchmark result to summarize (see $OUT)"; status=1
fi

# ---- per-kernel times of one step of a 2-layer model (the layers repeat), for tuning ----
if [[ "${ACCUM_BENCH_NCU:-0}" == 1 ]] && command -v ncu >/dev/null 2>&1; then
  log "ncu: kernel times of one step, 2 layers, B=$BATCH T=$SEQ"
  timeout "${ACCUM_NCU_TIMEOUT:-180}" ncu --clock-control none --metrics gpu__time_duration.sum \
    --csv --log-file "$OUT/ncu.csv" "$BIN/gpt2_bench" --layers 2 --batch "$BATCH" --seq "$SEQ" \
    --steps 1 --warmup 0 > /dev/null 2> "$OUT/ncu_bench.log" || echo "ncu failed or timed out"
  [[ -s "$OUT/ncu.csv" ]] && "$PYTHON" "$ROOT/bench/gpu/ncu_kernels.py" "$OUT/ncu.csv" \
    --out "$OUT/ncu_summary.md" || true
  # The same 2-layer step timed without ncu: its micro_ms minus the kernels' sum is the time
  # the GPU waits between kernels (launch gaps).
  "$BIN/gpt2_bench" --layers 2 --batch "$BATCH" --seq "$SEQ" --steps 20 --warmup 5 \
    --out "$OUT/accum_2layers.json" 2> "$OUT/accum_2layers.log" || echo "2-layer run failed"
  if [[ "${ACCUM_BENCH_NCU_DETAIL:-0}" == 1 ]]; then
    # Why the largest kernels take their time: throughput of each pipe, stall reasons,
    # occupancy and instruction mix, one launch each of a 1-layer step.
    log "ncu: details of the attention, classifier and AdamW kernels"
    timeout "${ACCUM_NCU_TIMEOUT:-180}" ncu --clock-control none \
      --kernel-name 'regex:attention_(forward|backward)_.*mma|crossentropy|adamw' --launch-count 5 \
      --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
      --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats \
      --section InstructionStats "$BIN/gpt2_bench" --layers 1 --batch "$BATCH" --seq "$SEQ" \
      --steps 1 --warmup 0 > "$OUT/ncu_detail.txt" 2> "$OUT/ncu_detail.log" ||
      echo "ncu details failed or timed out"
    # The stall reasons of our own kernels, one launch each, in a pass of their own (a metric
    # name this ncu lacks costs this table, not the sections above).
    log "ncu: stall reasons of our kernels"
    stall_metrics="$("$PYTHON" -c 'import sys; sys.path.insert(0, sys.argv[1]);
import ncu_kernels; print(",".join(ncu_kernels.STALL_METRICS))' "$ROOT/bench/gpu")"
    timeout "${ACCUM_NCU_TIMEOUT:-180}" ncu --clock-control none \
      --kernel-name 'regex:_kernel' --launch-count 30 --metrics "$stall_metrics" --csv \
      --log-file "$OUT/ncu_stalls.csv" "$BIN/gpt2_bench" --layers 1 --batch "$BATCH" \
      --seq "$SEQ" --steps 1 --warmup 0 > /dev/null 2> "$OUT/ncu_stalls.log" ||
      echo "ncu stall reasons failed or timed out"
    [[ -s "$OUT/ncu_stalls.csv" ]] && "$PYTHON" "$ROOT/bench/gpu/ncu_kernels.py" --stalls \
      "$OUT/ncu_stalls.csv" --out "$OUT/ncu_stalls.md" > /dev/null || true
  fi
fi

# ---- how long the GPU waits between kernels in the timed steps (nsys, when installed) ----
if [[ "${ACCUM_BENCH_NSYS:-0}" == 1 ]]; then
  NSYS="$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys \
    2> /dev/null | head -n 1)"
  if [[ -n "$NSYS" ]]; then
    log "nsys: GPU idle time between operations in 5 timed steps, B=$BATCH T=$SEQ"
    timeout "${ACCUM_NSYS_TIMEOUT:-120}" "$NSYS" profile -t cuda --capture-range=cudaProfilerApi \
      --capture-range-end=stop -f true -o "$OUT/steps" "$BIN/gpt2_bench" "${MODEL[@]}" \
      --batch "$BATCH" --seq "$SEQ" --steps 5 --warmup 3 > "$OUT/nsys.log" 2>&1 &&
      "$NSYS" stats --report cuda_gpu_trace --format csv --output "$OUT/steps" \
        "$OUT/steps.nsys-rep" >> "$OUT/nsys.log" 2>&1
    trace="$(ls "$OUT"/steps*cuda_gpu_trace*.csv 2> /dev/null | head -n 1)"
    if [[ -n "$trace" ]]; then
      "$PYTHON" "$ROOT/bench/gpu/gpu_gaps.py" "$trace" --out "$OUT/gaps.md" || true
    else
      echo "nsys gave no trace (see $OUT/nsys.log)"
    fi
  else
    echo "nsys not found: GPU idle time not measured" | tee -a "$OUT/gpu.log"
  fi
fi
exit $status
