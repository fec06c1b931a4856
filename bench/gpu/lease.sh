#!/usr/bin/env bash
# bench/gpu/lease.sh — make a short GPU lease count: build on the build machine, then one
# call on the GPU host runs everything and brings the results back in one file.
#
#   bench/gpu/lease.sh prepare [BASE_REV|last] on the build machine (no GPU needed)
#       Builds gpu_test and gpt2_bench standalone (bench/gpu, minigtest and naive BLAS: a
#       GPU host may have none of Debian's libraries) into build-lease/bin, libgomp into
#       build-lease/lib. With BASE_REV (a git revision) the same two programs of that
#       revision go into build-lease-base/bin, for a before/after comparison ("last": the
#       previous prepare's binaries become the "before"). REVISION files name both. With
#       ACCUM_LEASE_FULL_BUILD=DIR (a full build with CUDA, e.g. build-cuda) it also packs
#       the gpu tests that need MPI and the worker (bench/gpu/bundle.sh pack DIR).
#   bench/gpu/lease.sh run OUT_DIR            on the GPU host, from the repository root
#       1. bench/gpu.sh with those binaries: gpu tests, GPT-2 124M vs PyTorch, ablations,
#          K scaling, micro-batches 16 and 32, the 1.3B search, per-kernel ncu table;
#          then PyTorch's attention kernels on GPT-2's attention shape (torch_attention.py);
#       2. bench/gpu/compare.py before/after, if build-lease-base exists;
#       3. if step 1 timed the kernels under ncu: the attention kernels again under ncu with
#          each switch of ACCUM_LEASE_NCU_VARIANTS, side by side with the default
#          (ncu_variants.md: candidates too small for a step time to resolve);
#       4. compute-sanitizer memcheck and racecheck on the op tests of ACCUM_LEASE_FILTER;
#       5. with build-lease/bundle.tar.xz: the full build's gpu tests (NCCL, the worker)
#          through bench/gpu/bundle.sh test;
#       6. if build-lease-base exists and step 1 timed the kernels under ncu: the same ncu
#          run of the "before" binary, and ncu_compare.md (per kernel, before and after on
#          this card: the previous leases' per-kernel numbers came from another card);
#       then OUT_DIR/g.tgz holds every log and JSON, and the tables are printed last.
#   bench/gpu/lease.sh check OUT_DIR          on the GPU host: a short call (~2 min) after a fix,
#       when a lease has time left: the gpu tests (and the bundle's, if packed), the "before"
#       build (if build-lease-base exists) and each switch of ACCUM_LEASE_CHECK_SWITCHES
#       against the default in alternating rounds (compare.py), once per vocabulary of
#       ACCUM_LEASE_CHECK_VOCABS, PyTorch at each of ACCUM_LEASE_CHECK_TORCH_VOCABS, cuBLASLt's
#       candidate table (2 layers); OUT_DIR/c.tgz.
#
# With the device tool of this workplace: prepare here, then run
#   command "bash bench/gpu/lease.sh run $OUT", carry ["build-lease", "build-lease-base"].
# Knobs: ACCUM_CUDA_ARCHS (prepare; default 90: H100/H200; nothing needs the arch-specific
# 90a since the wgmma attention was removed), ACCUM_LEASE_FILTER (default: the attention,
# classifier, LayerNorm and AdamW op tests, and for memcheck also the encoder and the BGRADA
# matmul test; none: no sanitizer), ACCUM_LEASE_GPU_SH_SECONDS (default 300: 270 ran out
# in the ncu stall step on an H100, RESULTS 4.14), ACCUM_BENCH_NCU (default 1: each kernel's
# time under ncu; 0 skips ncu, ~20 s), ACCUM_BENCH_NCU_DETAIL (default 1: ncu's
# sections for the largest kernels and the stall reasons of all of ours),
# ACCUM_BENCH_NSYS (default 1: the GPU's idle time between operations, when nsys exists),
# ACCUM_LEASE_RACECHECK_FILTER (default: ACCUM_LEASE_FILTER or our kernels' tests but the
# GPT-2-shape attention one),
# ACCUM_LEASE_SANITIZER_SECONDS (memcheck, default 40), ACCUM_LEASE_RACECHECK_SECONDS
# (default 100: the 23 tests of session 10 took ~110 s on an H100), ACCUM_LEASE_COMPARE_ROUNDS
# (default 3), ACCUM_LEASE_NCU_BEFORE_SECONDS
# (default 60; 0: no step 6), ACCUM_LEASE_NCU_VARIANTS (step 3's switches, space-separated;
# empty: none), ACCUM_LEASE_NCU_VARIANT_SECONDS (each, default 25).
# The steps are ordered by what a lease most needs and sized to end in about 9 minutes (the
# device call's limit is 10): a run cut short loses the last ones, and what it wrote so far
# under OUT_DIR still comes back.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 1

build_standalone() {  # SOURCE_ROOT BUILD_DIR
  cmake -S "$1/bench/gpu" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DACCUM_CUDA_ARCHS="${ACCUM_CUDA_ARCHS:-90}" -DACCUM_GPU_FORCE_MINIGTEST=ON \
    -DACCUM_GPU_FORCE_NAIVE_BLAS=ON -DACCUM_GPU_WERROR=ON > /dev/null &&
    cmake --build "$2" -j "$(nproc)" --target gpu_test gpt2_bench
}

prepare() {
  local base_rev="${1:-}"
  if [[ "$base_rev" == last ]]; then
    # The previous lease's binaries become "before": no rebuild of an older revision.
    [[ -x build-lease/bin/gpt2_bench ]] || { echo "lease.sh: no previous build-lease/bin" >&2; return 1; }
    rm -rf build-lease-base && mkdir -p build-lease-base && cp -a build-lease/bin build-lease-base/ &&
      cp build-lease/REVISION build-lease-base/ 2> /dev/null
    local before
    before="$(cat build-lease-base/REVISION 2> /dev/null || echo "revision unknown")"
    echo "lease.sh: before = the last lease's build ($before)"
    base_rev=""
  fi
  rm -rf build-lease && mkdir -p build-lease/lib || return 1
  build_standalone "$ROOT" build-lease/cmake || { echo "lease.sh: build failed" >&2; return 1; }
  mv build-lease/cmake/bin build-lease/bin && rm -rf build-lease/cmake
  git describe --always --dirty > build-lease/REVISION
  local gomp
  gomp="$(ldd build-lease/bin/gpu_test | awk '/libgomp/ {print $3}')"
  [[ -n "$gomp" ]] && cp -L "$gomp" build-lease/lib/
  if [[ -n "$base_rev" ]]; then
    local src
    src="$(mktemp -d)/src"
    git worktree add --detach "$src" "$base_rev" > /dev/null || return 1
    rm -rf build-lease-base && mkdir -p build-lease-base
    build_standalone "$src" build-lease-base/cmake
    local rc=$?
    git worktree remove --force "$src"
    [[ $rc -eq 0 ]] || { echo "lease.sh: build of $base_rev failed" >&2; return 1; }
    mv build-lease-base/cmake/bin build-lease-base/bin && rm -rf build-lease-base/cmake
    git rev-parse --short "$base_rev" > build-lease-base/REVISION
  fi
  if [[ -n "${ACCUM_LEASE_FULL_BUILD:-}" ]]; then
    bash bench/gpu/bundle.sh pack "$ACCUM_LEASE_FULL_BUILD" || return 1
  fi
  du -sh build-lease* | sed 's/^/lease.sh: carry /'
}

# CUDA's libraries and the libgomp that prepare copied (a GPU host may lack Debian's).
lease_libraries() {
  export LD_LIBRARY_PATH="/usr/local/cuda/lib64:/usr/local/cuda/lib:$ROOT/build-lease/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

run() {
  local out="${1:?usage: lease.sh run OUT_DIR}"
  local g="$out/g" new="$ROOT/build-lease/bin" old="$ROOT/build-lease-base/bin"
  mkdir -p "$g"
  export PYTHONUNBUFFERED=1 PATH="$PATH:/usr/local/cuda/bin"
  lease_libraries
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,temperature.gpu \
    --format=csv,noheader | tee "$g/card.txt"
  [[ -x "$new/gpt2_bench" ]] || { echo "lease.sh: no build-lease/bin: run prepare first"; return 1; }

  ACCUM_GPU_BIN="$new" ACCUM_BENCH_OUT="$g" ACCUM_RESULTS="$g/RESULTS.part" ACCUM_BENCH_NCU="${ACCUM_BENCH_NCU:-1}" \
    ACCUM_BENCH_NCU_DETAIL="${ACCUM_BENCH_NCU_DETAIL:-1}" ACCUM_BENCH_NSYS="${ACCUM_BENCH_NSYS:-1}" \
    ACCUM_GPU_TEST_TIMEOUT=150 ACCUM_NCU_TIMEOUT=80 \
    timeout "${ACCUM_LEASE_GPU_SH_SECONDS:-300}" bash bench/gpu.sh > "$g/run.log" 2>&1
  echo "gpu.sh exit $?"

  # PyTorch's fused attention kernels on GPT-2's attention shape (~20 s): what exists on
  # this card to set ours against (bench/RESULTS.md 4.18). Ours: ncu.csv from step 1.
  timeout 60 python3 bench/gpu/torch_attention.py --out "$g/torch_attention.json" \
    > "$g/torch_attention.md" 2> "$g/torch_attention.log"
  echo "torch_attention.py exit $?"

  if [[ -x "$old/gpt2_bench" ]]; then
    timeout 90 python3 bench/gpu/compare.py --rounds "${ACCUM_LEASE_COMPARE_ROUNDS:-3}" --out "$g/compare.md" \
      before="$old/gpt2_bench" after="$new/gpt2_bench" \
      -- --batch 8 --seq 1024 --steps 20 --warmup 5 2> "$g/compare.log"
    echo "compare.py exit $?"
    echo "before: $(cat "$ROOT/build-lease-base/REVISION" 2> /dev/null || echo unknown)," \
      "after: $(cat "$ROOT/build-lease/REVISION" 2> /dev/null || echo unknown)" >> "$g/compare.md"
  fi

  # Candidates too small for a step time to resolve (one kernel of ~60 per layer): the
  # attention kernels under ncu with each switch, against the default's from step 1.
  local variant_s="${ACCUM_LEASE_NCU_VARIANT_SECONDS:-25}"
  local variants="${ACCUM_LEASE_NCU_VARIANTS-ACCUM_ATTENTION_HEAD_GROUP=1 ACCUM_ATTENTION_HEAD_GROUP=48 ACCUM_ATTENTION=mma_fwd128 ACCUM_ATTENTION=mma_dkdv32}"
  if [[ -s "$g/ncu.csv" && -n "$variants" ]]; then
    for variant in $variants; do
      local name="${variant//[^A-Za-z0-9]/_}"
      timeout "$variant_s" env "$variant" ncu --clock-control none --kernel-name regex:attention \
        --metrics gpu__time_duration.sum --csv --log-file "$g/ncu_$name.csv" "$new/gpt2_bench" \
        --layers 2 --batch "${ACCUM_BENCH_BATCH:-8}" --seq "${ACCUM_BENCH_SEQ:-1024}" --steps 1 \
        --warmup 0 > /dev/null 2> "$g/ncu_$name.log"
      echo "ncu with $variant exit $?"
      [[ -s "$g/ncu_$name.csv" ]] && python3 bench/gpu/ncu_kernels.py "$g/ncu_$name.csv" \
        --before "$g/ncu.csv" --out "$g/ncu_$name.md" > /dev/null &&
        { echo "default (before) vs $variant (after), attention kernels:"; grep -E "^\| (kernel|---)|attention" "$g/ncu_$name.md"; } >> "$g/ncu_variants.md"
    done
  fi

  # Our own kernels; memcheck also takes the encoder (buckets staged through pinned memory)
  # and cuBLASLt's BGRADA epilogue writing into scratch.
  local kernels="CudaOps.Attention*:CudaOps.CrossEntropy*:CudaOps.LayerNorm*:CudaOps.AdamW*"
  local filter="${ACCUM_LEASE_FILTER:-$kernels:CudaOps.Encoder*:CudaOps.MatmulBiasGradientFromTheGemmEpilogue}"
  # racecheck runs ~50x slower than memcheck: ACCUM_LEASE_RACECHECK_FILTER can narrow it. By
  # default it leaves out the GPT-2-shape attention test: on an H100 (RESULTS 4.14, call 1)
  # the run was still inside it at 100 s, the second test of 23. The smaller attention tests
  # run the same kernels.
  local race_filter="${ACCUM_LEASE_RACECHECK_FILTER:-${ACCUM_LEASE_FILTER:-$kernels-CudaOps.AttentionHeadSize64Gpt2Shape}}"
  [[ "$filter" == none ]] || for tool in memcheck racecheck; do
    local tool_filter="$filter" seconds="${ACCUM_LEASE_SANITIZER_SECONDS:-40}"
    if [[ $tool == racecheck ]]; then
      tool_filter="$race_filter" seconds="${ACCUM_LEASE_RACECHECK_SECONDS:-100}"
    fi
    timeout "$seconds" compute-sanitizer --tool "$tool" \
      "$new/gpu_test" --gtest_filter="$tool_filter" > "$g/sanitizer_$tool.log" 2>&1
    echo "compute-sanitizer $tool exit $?:" \
      "$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED' "$g/sanitizer_$tool.log" | tr '\n' ' ')"
  done

  if [[ -s "$ROOT/build-lease/bundle.tar.xz" ]]; then
    # The op tests already ran in gpu.sh (standalone build): only those that need MPI here.
    timeout 180 bash bench/gpu/bundle.sh test -L gpu -E '^(CudaOps|CudaTraining|CudaMemory)[.]' \
      > "$g/bundle.log" 2>&1
    echo "bundle.sh test exit $?:" \
      "$(grep -E 'bundle.sh:|tests passed|tests failed' "$g/bundle.log" | tr '\n' ' ')"
  fi

  local ncu_before_s="${ACCUM_LEASE_NCU_BEFORE_SECONDS:-60}"
  if [[ -x "$old/gpt2_bench" && -s "$g/ncu.csv" && "$ncu_before_s" != 0 ]]; then
    # The arguments of bench/gpu.sh's ncu pass (2 layers, one step, its B and T).
    timeout "$ncu_before_s" ncu --clock-control none --metrics gpu__time_duration.sum --csv \
      --log-file "$g/ncu_before.csv" "$old/gpt2_bench" --layers 2 --batch "${ACCUM_BENCH_BATCH:-8}" \
      --seq "${ACCUM_BENCH_SEQ:-1024}" --steps 1 --warmup 0 > /dev/null 2> "$g/ncu_before.log"
    echo "ncu before exit $?"
    [[ -s "$g/ncu_before.csv" ]] && python3 bench/gpu/ncu_kernels.py "$g/ncu.csv" \
      --before "$g/ncu_before.csv" --out "$g/ncu_compare.md" > /dev/null
  fi

  grep -E "gpu tests:|ratio|overhead|^\| [0-9]|^\| accum|^\| pytorch|1.3B|exit" "$g/run.log"
  if [[ -s "$g/ncu_compare.md" ]]; then
    head -30 "$g/ncu_compare.md"
  elif [[ -s "$g/ncu_summary.md" ]]; then
    head -24 "$g/ncu_summary.md"
  fi
  [[ -s "$g/gaps.md" ]] && head -8 "$g/gaps.md"
  [[ -s "$g/ncu_stalls.md" ]] && head -30 "$g/ncu_stalls.md"
  [[ -s "$g/ncu_variants.md" ]] && cat "$g/ncu_variants.md"
  [[ -s "$g/torch_attention.md" ]] && cat "$g/torch_attention.md"
  (cd "$out" && tar czf g.tgz g && rm -rf g)
  echo "lease.sh: results in $out/g.tgz"
}

check() {
  local out="${1:?usage: lease.sh check OUT_DIR}"
  local c="$out/c" new="$ROOT/build-lease/bin" old="$ROOT/build-lease-base/bin"
  mkdir -p "$c"
  lease_libraries
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$c/card.txt" 2>&1
  cat "$c/card.txt"
  [[ -x "$new/gpt2_bench" ]] || { echo "lease.sh: no build-lease/bin: run prepare first"; return 1; }
  sed 's/^/revision /' "$ROOT/build-lease/REVISION" 2> /dev/null
  timeout 60 "$new/gpu_test" > "$c/gpu_test.log" 2>&1
  echo "gpu_test exit $?: $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$c/gpu_test.log" | tr '\n' ' ')"
  if [[ -s "$ROOT/build-lease/bundle.tar.xz" ]]; then  # the worker and NCCL (~30 s)
    timeout 120 bash bench/gpu/bundle.sh test -L gpu -E '^(CudaOps|CudaTraining|CudaMemory)[.]' \
      > "$c/bundle.log" 2>&1
    echo "bundle.sh test exit $?: $(grep -E 'tests passed|tests failed' "$c/bundle.log")"
  fi
  local builds=() switch vocab
  # With build-lease-base (prepare BASE_REV|last): the "before" binary first, the speed-ups
  # are then against it.
  if [[ -x "$old/gpt2_bench" ]]; then
    builds+=(before="$old/gpt2_bench" after="$new/gpt2_bench")
  else
    builds+=(default="$new/gpt2_bench")
  fi
  for switch in ${ACCUM_LEASE_CHECK_SWITCHES-ACCUM_CUDA_SIDE_STREAM=1 ACCUM_CUDA_SIDE_STREAM=equal}; do
    builds+=("${switch//=/:}=$switch $new/gpt2_bench")  # a label has no '='
  done
  # One comparison per vocabulary of ACCUM_LEASE_CHECK_VOCABS (default: gpt2_bench's 50304).
  for vocab in ${ACCUM_LEASE_CHECK_VOCABS:-50304}; do
    timeout "${ACCUM_LEASE_CHECK_COMPARE_SECONDS:-120}" python3 bench/gpu/compare.py \
      --rounds "${ACCUM_LEASE_COMPARE_ROUNDS:-5}" --out "$c/compare_v$vocab.md" "${builds[@]}" \
      -- --vocab "$vocab" --batch "${ACCUM_BENCH_BATCH:-8}" --seq "${ACCUM_BENCH_SEQ:-1024}" \
      --steps 20 --warmup 5 2> "$c/compare_v$vocab.log"
    echo "compare.py V=$vocab exit $?"
    { echo "V=$vocab"; cat "$c/compare_v$vocab.md"; } >> "$c/compare.md" 2> /dev/null
  done
  # PyTorch at each vocabulary of ACCUM_LEASE_CHECK_TORCH_VOCABS (~50 s each): the reference
  # for the same rows, on the same card in the same call.
  for vocab in ${ACCUM_LEASE_CHECK_TORCH_VOCABS-}; do
    timeout 120 python3 bench/gpu/torch_gpt2.py --vocab "$vocab" --batch "${ACCUM_BENCH_BATCH:-8}" \
      --seq "${ACCUM_BENCH_SEQ:-1024}" --steps 20 --warmup 5 --out "$c/torch_v$vocab.json" \
      2> "$c/torch_v$vocab.log"
    echo "torch_gpt2.py V=$vocab exit $?: $(tail -n 1 "$c/torch_v$vocab.log")"
  done
  # bench/gpu.sh's cuBLASLt table: every GEMM shape of a step (2 layers are enough).
  timeout 60 env ACCUM_CUBLASLT_REPORT="$c/gemm_algos.md" "$new/gpt2_bench" --layers 2 \
    --batch "${ACCUM_BENCH_BATCH:-8}" --seq "${ACCUM_BENCH_SEQ:-1024}" --steps 1 --warmup 0 \
    > /dev/null 2> "$c/gemm_algos.log"
  echo "cuBLASLt report exit $?"
  cat "$c/compare.md" "$c/gemm_algos.md" 2> /dev/null
  grep -E "^\[  FAILED  \]|Failure|actual:" "$c/gpu_test.log" | head -20
  (cd "$out" && tar czf c.tgz c && rm -rf c)
  echo "lease.sh: results in $out/c.tgz"
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  run) shift; run "$@" ;;
  check) shift; check "$@" ;;
  *) echo "usage: bench/gpu/lease.sh prepare [BASE_REV|last] | run OUT_DIR | check OUT_DIR" >&2; exit 2 ;;
esac
