#!/bin/bash
# bench/train/run.sh — end-to-end training throughput of accum-worker (CPU back end)
# against its PyTorch twin (gpt2_torch.py, Debian python3-torch), plus the
# peak-RSS-vs-K check of issue 2.
#
#   (a) n_layer 4, n_head 4, d_model 256, vocab 256, seq_len 256, B=8 on TEXT_BYTES
#       (/usr/share/common-licenses/* concatenated into one file);
#   (b) gpt2-124m preset (vocab 50257, max_seq_len 1024) at seq_len 256, B=2 on a
#       generated nanoGPT .bin of pseudo-random tokens < 50257.
# Both sides: same model, same step (K micro-batches, token-weighted loss, clip 1.0,
# AdamW), same data order, OMP_NUM_THREADS threads each. Steps 1..WARMUP are
# excluded; tokens/s = timed tokens / timed step time. The machine is shared, so
# the A/B runs are interleaved (order alternates per repetition) and the table
# reports medians over REPS.
# Peak RSS: /usr/bin/time -v "Maximum resident set size" of accum-worker with K=1
# and K=16 at the same micro-batch (memory must not grow with K; limit 2%).
#
# Before/after: BASE=OTHER_BUILD_DIR also runs that build's accum-worker in every
# repetition (same data, interleaved) and adds its tokens/s and the ratio to the table.
#
# Usage: bench/train/run.sh BUILD_DIR [configs=a,b] [reps=3]
# Env: THREADS (2), STEPS (8), WARMUP (3), RSS_STEPS (2), RSS_CONFIGS (a,b), OUT (results file),
#      BASE (a second build to compare against)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: run.sh BUILD_DIR [configs] [reps]}" && pwd)
configs=${2:-a,b}
reps=${3:-3}
threads=${THREADS:-2}
steps=${STEPS:-8}
warmup=${WARMUP:-3}
rss_steps=${RSS_STEPS:-2}
rss_configs=${RSS_CONFIGS-a,b}
out=${OUT:-$here/RESULTS-train.md}
worker=$build/bin/accum-worker
base_worker=${BASE:+$(cd "$BASE" && pwd)/bin/accum-worker}
python=/usr/bin/python3
[ -x "$worker" ] || { echo "run.sh: $worker not built (ninja accum-worker)" >&2; exit 1; }
[ -z "$base_worker" ] || [ -x "$base_worker" ] ||
  { echo "run.sh: BASE worker $base_worker not built" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "run.sh: /usr/bin/time missing (apt-get install time)" >&2; exit 1; }

work=$(mktemp -d /tmp/accum-bench-train.XXXXXX)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads

# ---- data -------------------------------------------------------------------------------
cat $(ls /usr/share/common-licenses/* | sort) > "$work/corpus.txt"
$python - "$work/tokens.bin" <<'EOF'
import sys, numpy as np
# 2M pseudo-random GPT-2 token ids (< 50257), nanoGPT raw uint16, fixed seed.
np.random.default_rng(1234).integers(0, 50257, size=2_000_000, dtype=np.uint16).tofile(sys.argv[1])
EOF

# ---- per-config settings ------------------------------------------------------------------
# model_json, data_json, B, T, torch args
cfg_model() {
  case $1 in
    a) echo '{"n_layer": 4, "n_head": 4, "d_model": 256, "vocab_size": 256, "max_seq_len": 256}' ;;
    b) echo '{"preset": "gpt2-124m"}' ;;
  esac
}
cfg_data() {
  case $1 in
    a) echo "{\"train\": \"$work/corpus.txt\", \"format\": \"TEXT_BYTES\", \"shuffle\": false}" ;;
    b) echo "{\"train\": \"$work/tokens.bin\", \"format\": \"NANOGPT_BIN\", \"shuffle\": false}" ;;
  esac
}
cfg_batch() { case $1 in a) echo 8 ;; b) echo 2 ;; esac; }
cfg_torch() {
  case $1 in
    a) echo "--data $work/corpus.txt --format text --n-layer 4 --n-head 4 --d-model 256 --vocab 256 --max-seq-len 256" ;;
    b) echo "--data $work/tokens.bin --format bin --preset gpt2-124m" ;;
  esac
}
cfg_name() {
  case $1 in
    a) echo "(a) L4 H4 C256 V256 T256 B8" ;;
    b) echo "(b) gpt2-124m T256 B2" ;;
  esac
}
T=256

# write_spec CONFIG K STEPS DIR -> DIR/job.json
write_spec() {
  local cfg=$1 K=$2 n=$3 dir=$4
  mkdir -p "$dir"
  cat > "$dir/job.json" <<EOF
{
  "name": "bench-$cfg-k$K",
  "model": $(cfg_model "$cfg"),
  "data": $(cfg_data "$cfg"),
  "batch": {"micro_batch_size": $(cfg_batch "$cfg"), "seq_len": $T, "grad_accum_steps": $K},
  "optimizer": {"lr": 0.0006, "min_lr": 0.0, "warmup_steps": 0, "schedule": "constant",
                "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "grad_clip": 1.0},
  "max_steps": $n, "seed": 1,
  "checkpoint": {"dir": "$dir/ckpt", "every_steps": 0, "keep_last": 1},
  "metrics_path": "$dir/metrics.jsonl", "device": "CPU", "precision": "FP32"
}
EOF
}

# tokens/s over steps > warmup from a metrics.jsonl or the torch log.
timed_rate() {
  $python - "$1" "$warmup" <<'EOF'
import json, sys
tokens = ms = 0.0
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    rec = json.loads(line)
    if "step" in rec and "step_ms" in rec and rec["step"] > int(sys.argv[2]):
        tokens += rec["tokens"]; ms += rec["step_ms"]
print(f"{tokens / (ms / 1e3):.1f}" if ms > 0 else "nan")
EOF
}

run_accumd() {  # CONFIG REP [WORKER] -> tokens/s
  local dir=$work/accumd-$1-$2 bin=${3:-$worker}
  rm -rf "$dir"
  write_spec "$1" 1 "$steps" "$dir"
  "$bin" --spec "$dir/job.json" > "$dir/log" 2>&1 || { cat "$dir/log" >&2; return 1; }
  timed_rate "$dir/metrics.jsonl"
  rm -rf "$dir/ckpt"
}
run_torch() {  # CONFIG REP -> tokens/s
  local dir=$work/torch-$1-$2
  mkdir -p "$dir"
  # shellcheck disable=SC2046
  $python "$here/gpt2_torch.py" $(cfg_torch "$1") --seq-len $T --batch "$(cfg_batch "$1")" \
    --accum 1 --steps "$steps" --warmup "$warmup" > "$dir/log" 2>&1 || { cat "$dir/log" >&2; return 1; }
  timed_rate "$dir/log"
}
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

load_start=$(uptime)
date_start=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
echo "run.sh: $threads threads, $steps steps ($warmup warm-up), $reps interleaved repetitions; load: $load_start"

declare -A accum_rates torch_rates base_rates
IFS=, read -ra cfg_list <<< "$configs"
for rep in $(seq 1 "$reps"); do
  for cfg in "${cfg_list[@]}"; do
    b=
    if (( rep % 2 == 1 )); then
      a=$(run_accumd "$cfg" "$rep")
      [ -z "$base_worker" ] || b=$(run_accumd "$cfg" "$rep" "$base_worker")
      t=$(run_torch "$cfg" "$rep")
    else
      t=$(run_torch "$cfg" "$rep")
      [ -z "$base_worker" ] || b=$(run_accumd "$cfg" "$rep" "$base_worker")
      a=$(run_accumd "$cfg" "$rep")
    fi
    accum_rates[$cfg]+="$a "; torch_rates[$cfg]+="$t "; base_rates[$cfg]+="${b:+$b }"
    echo "  rep $rep $(cfg_name "$cfg"): accumd $a tok/s${b:+, BASE $b tok/s}, torch $t tok/s"
  done
done

# ---- peak RSS vs K -----------------------------------------------------------------------
declare -A rss
IFS=, read -ra rss_list <<< "$rss_configs"
for cfg in "${rss_list[@]}"; do
  [ -n "$cfg" ] || continue
  for K in 1 16; do
    dir=$work/rss-$cfg-k$K
    write_spec "$cfg" "$K" "$rss_steps" "$dir"
    /usr/bin/time -v "$worker" --spec "$dir/job.json" > "$dir/log" 2> "$dir/time" ||
      { cat "$dir/log" "$dir/time" >&2; exit 1; }
    rss[$cfg-$K]=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$dir/time")
    rm -rf "$dir/ckpt"
    echo "  rss $(cfg_name "$cfg") K=$K: ${rss[$cfg-$K]} kB"
  done
done
load_end=$(uptime)

# ---- report ------------------------------------------------------------------------------
{
  echo "## Training throughput: accum-worker (CPU) vs PyTorch $($python -c 'import torch; print(torch.__version__)')"
  echo
  echo "- date: $date_start"
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "- command: \`${BASE:+BASE=$BASE }bench/train/run.sh $1 $configs $reps\` (THREADS=$threads STEPS=$steps WARMUP=$warmup)"
  echo "- load at start: \`$load_start\`"
  echo "- load at end: \`$load_end\`"
  echo "- $threads threads each (OMP_NUM_THREADS, torch.set_num_threads), K=1, steps 1..$warmup excluded,"
  echo "  median of $reps interleaved runs (each run: $((steps - warmup)) timed optimizer steps)"
  echo
  echo "| config | accumd tok/s | PyTorch tok/s | accumd/PyTorch | runs accumd | runs PyTorch |"
  echo "|---|---|---|---|---|---|"
  for cfg in "${cfg_list[@]}"; do
    # shellcheck disable=SC2086
    ma=$(median ${accum_rates[$cfg]}); mt=$(median ${torch_rates[$cfg]})
    ratio=$(awk -v a="$ma" -v t="$mt" 'BEGIN {printf "%.2fx", a / t}')
    echo "| $(cfg_name "$cfg") | $ma | $mt | **$ratio** | ${accum_rates[$cfg]% } | ${torch_rates[$cfg]% } |"
  done
  if [ -n "$base_worker" ]; then
    echo
    echo "Before/after: \`$1\` against BASE \`$BASE\`, the same interleaved repetitions:"
    echo
    echo "| config | $1 tok/s | BASE tok/s | $1/BASE | runs BASE |"
    echo "|---|---|---|---|---|"
    for cfg in "${cfg_list[@]}"; do
      # shellcheck disable=SC2086
      ma=$(median ${accum_rates[$cfg]}); mb=$(median ${base_rates[$cfg]})
      ratio=$(awk -v a="$ma" -v b="$mb" 'BEGIN {printf "%.3fx", a / b}')
      echo "| $(cfg_name "$cfg") | $ma | $mb | **$ratio** | ${base_rates[$cfg]% } |"
    done
  fi
  if [ -n "$rss_configs" ]; then
    echo
    echo "Peak RSS of accum-worker (\`/usr/bin/time -v\`, $rss_steps optimizer steps, includes the final checkpoint write):"
    echo
    echo "| config | K=1 kB | K=16 kB | difference | within 2% |"
    echo "|---|---|---|---|---|"
    for cfg in "${rss_list[@]}"; do
      r1=${rss[$cfg-1]}; r16=${rss[$cfg-16]}
      diff=$(awk -v a="$r1" -v b="$r16" 'BEGIN {printf "%+.2f%%", (b - a) * 100 / a}')
      ok=$(awk -v a="$r1" -v b="$r16" 'BEGIN {d = (b - a) / a; print (d < 0 ? -d : d) <= 0.02 ? "yes" : "NO"}')
      echo "| $(cfg_name "$cfg") | $r1 | $r16 | $diff | $ok |"
    done
  fi
} > "$work/table.md"
cat "$work/table.md"
if [ "$out" != "-" ]; then
  { echo; cat "$work/table.md"; } >> "$out"
  echo "run.sh: appended to $out"
fi
