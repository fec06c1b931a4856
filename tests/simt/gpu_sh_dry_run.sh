#!/usr/bin/env bash
# tests/simt/gpu_sh_dry_run.sh — bench/gpu.sh end to end on the SIMT emulator, so the
# rare GPU lease is not spent on the script's own bugs: the gpu tests (a subset), the
# benchmark with its ablations and variants, K scaling, and the largest-micro-batch search of the
# large run (the emulated device is sized so that B=16 does not fit and B=8 does), then
# the summary. A tiny model stands in for GPT-2 (one head of GPT-2's size 64, so every
# attention candidate runs); PyTorch is skipped (it needs CUDA).
# Asserts the script's exit status and what the summary says.
#
# usage: gpu_sh_dry_run.sh REPO_ROOT GPU_SIMT_TEST GPT2_BENCH_SIMT
set -euo pipefail
root=$1 gpu_test=$2 gpt2_bench=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/bin"
ln -s "$gpu_test" "$work/bin/gpu_test"
ln -s "$gpt2_bench" "$work/bin/gpt2_bench"
echo "# results" > "$work/RESULTS.md"

fail() { echo "FAILED: $*"; echo "--- gpu.sh output:"; cat "$work/gpu.out"; exit 1; }

# 32 MiB of cuBLASLt workspace + the large model: 10.5 MB at B=16, 6.4 MB at B=8.
export ACCUM_SIMT_DEVICE_BYTES=$(( (32 << 20) + 8000000 ))
status=0
ACCUM_GPU_BIN="$work/bin" \
ACCUM_GPU_TEST_ARGS="--gtest_filter=CudaOps.Gelu:CudaOps.AdamWTwoSteps" \
ACCUM_BENCH_MODEL="--layers 1 --heads 1 --dmodel 64 --vocab 96" ACCUM_BENCH_SEQ=64 \
ACCUM_BENCH_BATCH=2 ACCUM_BENCH_BATCHES=4 ACCUM_BENCH_STEPS=4 ACCUM_BENCH_K="1 2 4" \
ACCUM_BENCH_LARGE="--layers 1 --heads 2 --dmodel 64 --vocab 96 --seq 128" \
ACCUM_BENCH_LARGE_B="16 8 4" ACCUM_SKIP_TORCH=1 ACCUM_PEAK_TFLOPS=1 ACCUM_BENCH_VOCAB=97 \
ACCUM_BENCH_OUT="$work/out" ACCUM_RESULTS="$work/RESULTS.md" \
  bash "$root/bench/gpu.sh" > "$work/gpu.out" 2>&1 || status=$?

[[ $status -eq 0 ]] || fail "bench/gpu.sh exited $status"
summary="$work/out/summary.md"
[[ -s "$summary" ]] || fail "no summary.md"
expect() { grep -qF -- "$1" "$summary" || fail "summary.md lacks: $1"; }
expect "gpu tests: 2 passed, 0 failed, 0 skipped (exit 0)"
expect "| accum-cuda |"
expect "| accum-cuda with ACCUM_ATTENTION=simple |"
expect "| accum-cuda with ACCUM_CUBLASLT_GELU=0 |"
expect "| accum-cuda with ACCUM_ATTENTION=mma_dkdv32 |"
expect "| accum-cuda with ACCUM_ATTENTION=mma_fwd128 |"
expect "| accum-cuda with ACCUM_CUDA_GRAPHS=0 |"
expect "| accum-cuda with ACCUM_CUBLASLT_BGRAD=1 |"
expect "| accum-cuda with ACCUM_LAYERNORM_GRADS=two_pass |"
expect "| accum-cuda with ACCUM_ATTENTION_HEAD_GROUP=48 |"
expect "| accum-cuda with ACCUM_ATTENTION_HEAD_GROUP=1 |"
expect "| accum-cuda with ACCUM_CUBLASLT_ALGOS=$work/out/cublaslt_algos.tsv |"
grep -q "^machine	" "$work/out/cublaslt_algos.tsv" || fail "the ACCUM_CUBLASLT_ALGOS row kept no choices"
expect "PyTorch reference: not run"
expect "The same runs at V=97, the vocabulary a spec's GPT-2 preset trains (the rows above use V=96"
grep -qE '^\| accum-cuda \| 97 \| [0-9.]+ \| [0-9]+ \| [0-9.]+% \| [0-9.]+x \|$' "$summary" ||
  fail "no accum-cuda row at V=97 set against V=96"
expect "| micro-batch B | step ms | tokens/s | MFU |"
batch_rows=$(awk '/^\| micro-batch B/ {f = 1; next} f && /^$/ {f = 0} f' "$summary" | grep -c '^| [24] |')
[[ $batch_rows == 2 ]] || fail "the micro-batch table lacks the rows of B=2 and B=4"
expect "| m x n x k | op(A) op(B) | D | beta | epilogue |"
for k in 1 2 4; do expect "| $k | "; done
expect "| overhead | overhead vs this run's micro-steps |"
# The K > 1 windows split into their writing first micro-step and the adding others.
expect "| K | first (writes) ms | others (add) ms | add / write |"
grep -q '"first_micro_ms":[0-9.]*,"adding_micro_ms":[0-9.]' "$work/out/accum_kscaling.json" ||
  fail "the K scaling JSON lacks the micro-step split"
expect "of device memory: B=8;"
grep -q "out of device memory at micro-batch 16" "$work/out/accum_1p3b_b16.log" ||
  fail "B=16 was not refused for memory"
grep -qF "| accum-cuda |" "$work/RESULTS.md" || fail "the summary was not appended to ACCUM_RESULTS"
# Every result names the switches it ran with; the default run launched CUDA graphs and the
# ACCUM_CUDA_GRAPHS=0 row none.
grep -q '"switches":{}' "$work/out/accum.json" || fail "the default run lists switches"
grep -q '"switches":{"ACCUM_CUDA_GRAPHS":"0"}' "$work/out/accum_ACCUM_CUDA_GRAPHS_0.json" ||
  fail "the run without CUDA graphs does not name its switch"
grep -q '"recorded_launches":0' "$work/out/accum_ACCUM_CUDA_GRAPHS_0.json" ||
  fail "the run with ACCUM_CUDA_GRAPHS=0 launched graphs"
grep -Eq '"recorded_launches":[1-9]' "$work/out/accum.json" || fail "the default run launched no graph"
learned=$(grep -o '"learned":[a-z]*' "$work/out/accum.json")
[[ $learned == '"learned":true' ]] || fail "main run: $learned"
echo "bench/gpu.sh dry run on the SIMT emulator: ok"
cat "$summary"
