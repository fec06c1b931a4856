#!/usr/bin/env bash
# bench/daemon/run.sh — accumd's control-plane benchmark (issue 5, "Benchmark").
#
# Starts a real accumd on loopback (token auth, its own state dir, --slots 1),
# then daemon_bench:
#   1. the same CPU training job (OMP_NUM_THREADS=1) run under each load
#      condition, rounds interleaved; a loaded run has $CLIENTS threads calling
#      GetJob on the training job from its first optimizer step to its end;
#      tokens/s from the job's metrics.jsonl (first $SKIP_STEPS steps left out);
#   2. SubmitJob -> first optimizer step of a small job, $STARTUP_RUNS times.
# Writes $OUT (default bench/daemon/RESULTS-daemon.md) with the machine, the
# load average before/during/after, CPU time used by accumd and daemon_bench,
# and the tables. Everything it starts is stopped on exit.
#
#   bench/daemon/run.sh                 # builds daemon_bench etc. in $BUILD first
#   BUILD=/path/to/build ROUNDS=5 CONDITIONS=none,closed bench/daemon/run.sh
#   CONTROL_CPUS=1 WORKER_CPUS=0 APPEND=1 LABEL="isolated cores" bench/daemon/run.sh
# CONTROL_CPUS runs accumd and daemon_bench under `taskset -c`; WORKER_CPUS moves
# the training worker there at its first step. APPEND=1 adds a section to $OUT.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build-dbench}
OUT=${OUT:-$ROOT/bench/daemon/RESULTS-daemon.md}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-64}
CHANNELS=${CHANNELS:-private}
CONDITIONS=${CONDITIONS:-none,closed,paced:10}
MAX_STEPS=${MAX_STEPS:-200}
SKIP_STEPS=${SKIP_STEPS:-5}
STARTUP_RUNS=${STARTUP_RUNS:-5}
SKIP_BUILD=${SKIP_BUILD:-0}
CONTROL_CPUS=${CONTROL_CPUS:-}
WORKER_CPUS=${WORKER_CPUS:-}
APPEND=${APPEND:-0}
LABEL=${LABEL:-shared cores}
ACCUMD_BIN=${ACCUMD_BIN:-$BUILD/bin/accumd}  # another accumd to compare (same worker)
PIN_CONTROL=()
PIN_WORKER=()
[[ -n "$CONTROL_CPUS" ]] && PIN_CONTROL=(taskset -c "$CONTROL_CPUS")
[[ -n "$WORKER_CPUS" ]] && PIN_WORKER=(--pin-worker-cpus "$WORKER_CPUS")

if [[ "$SKIP_BUILD" != 1 ]]; then
  [[ -f "$BUILD/build.ninja" ]] || cmake -S "$ROOT" -B "$BUILD" -G Ninja -DACCUM_WITH_CUDA=OFF >/dev/null
  ninja -C "$BUILD" -j2 accumd accum-worker daemon_bench >/dev/null
fi
for binary in accumd accum-worker daemon_bench; do
  [[ -x "$BUILD/bin/$binary" ]] || { echo "run.sh: $BUILD/bin/$binary missing (build it or unset SKIP_BUILD)" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/accumd-bench-XXXXXX)
ACCUMD_PID=""
SAMPLER_PID=""
cleanup() {
  [[ -n "$SAMPLER_PID" ]] && kill "$SAMPLER_PID" 2>/dev/null || true
  if [[ -n "$ACCUMD_PID" ]]; then
    kill "$ACCUMD_PID" 2>/dev/null || true
    wait "$ACCUMD_PID" 2>/dev/null || true
  fi
  # Workers outlive accumd by design; stop the ones of this benchmark's jobs.
  for pid in $(pgrep -f -- "$WORK/state/jobs/" || true); do kill -9 "$pid" 2>/dev/null || true; done
  [[ -n "${KEEP_WORK:-}" ]] || rm -rf "$WORK"
}
trap cleanup EXIT

# ---- inputs: token, corpus (the repository's own C++ sources as bytes), spec ----------
echo "bench-token-$$-$RANDOM" >"$WORK/token"
chmod 600 "$WORK/token"
(cd "$ROOT" && git ls-files -- 'daemon/*.cpp' 'daemon/*.h' 'kernels/cpu/*.cpp' | xargs cat) >"$WORK/corpus.txt"
# ~0.1-0.2 s per optimizer step on one core of this machine: 4 x 64 tokens x K 4.
cat >"$WORK/spec.json" <<EOF
{
  "name": "daemon-bench",
  "model": {"n_layer": 2, "n_head": 4, "d_model": 128, "vocab_size": 256, "max_seq_len": 64},
  "data": {"train": "corpus.txt", "format": "TEXT_BYTES"},
  "batch": {"micro_batch_size": 4, "seq_len": 64, "grad_accum_steps": 4},
  "optimizer": {"lr": 0.001, "schedule": "constant", "warmup_steps": 0},
  "max_steps": $MAX_STEPS, "seed": 1, "world_size": 1,
  "checkpoint": {"every_steps": 0, "keep_last": 1}
}
EOF

# ---- accumd ----------------------------------------------------------------------------
OMP_NUM_THREADS=1 "${PIN_CONTROL[@]}" "$ACCUMD_BIN" --listen 127.0.0.1:0 --state-dir "$WORK/state" \
  --token-file "$WORK/token" --slots 1 --addr-file "$WORK/addr" --worker-bin "$BUILD/bin/accum-worker" \
  --mpirun-arg --bind-to --mpirun-arg none --mpirun-arg --mca --mpirun-arg btl \
  --mpirun-arg self,vader >"$WORK/accumd.log" 2>&1 &
ACCUMD_PID=$!
for _ in $(seq 100); do [[ -s "$WORK/addr" ]] && break; sleep 0.1; done
[[ -s "$WORK/addr" ]] || { echo "run.sh: accumd did not start:" >&2; cat "$WORK/accumd.log" >&2; exit 1; }
ADDR=$(cat "$WORK/addr")

cpu_seconds() {  # utime + stime of a pid, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$1/stat"
}

LOAD_BEFORE=$(uptime)
(while true; do cut -d' ' -f1 /proc/loadavg; sleep 5; done) >"$WORK/loadavg" &
SAMPLER_PID=$!
ACCUMD_CPU_BEFORE=$(cpu_seconds "$ACCUMD_PID")
STARTED=$(date +%s)
COMMAND=("$BUILD/bin/daemon_bench" --server "$ADDR" --token-file "$WORK/token" --spec "$WORK/spec.json"
         --rounds "$ROUNDS" --clients "$CLIENTS" --channels "$CHANNELS" --conditions "$CONDITIONS"
         --skip-steps "$SKIP_STEPS" --startup-runs "$STARTUP_RUNS" "${PIN_WORKER[@]}")
/usr/bin/time -f '%U %S %e' -o "$WORK/bench.time" env OMP_NUM_THREADS=1 "${PIN_CONTROL[@]}" "${COMMAND[@]}" \
  >"$WORK/tables.md" 2>"$WORK/bench.log" || {
  echo "run.sh: daemon_bench failed:" >&2; cat "$WORK/bench.log" >&2; tail -20 "$WORK/accumd.log" >&2; exit 1; }
ELAPSED=$(( $(date +%s) - STARTED ))
ACCUMD_CPU=$(awk -v a="$(cpu_seconds "$ACCUMD_PID")" -v b="$ACCUMD_CPU_BEFORE" 'BEGIN { printf "%.1f", a - b }')
kill "$SAMPLER_PID"; SAMPLER_PID=""
LOAD_AFTER=$(uptime)
read -r BENCH_USER BENCH_SYS BENCH_WALL <"$WORK/bench.time"
LOAD_DURING=$(sort -n "$WORK/loadavg" | awk '{ v[NR] = $1 } END { printf "min %s, median %s, max %s (%d samples, every 5 s)", v[1], v[int((NR + 1) / 2)], v[NR], NR }')

# ---- RESULTS ---------------------------------------------------------------------------
TMP_OUT="$WORK/results-section.md"
CPU_NOTE="not pinned: the kernel schedules the worker, accumd and the clients on both cores"
if [[ -n "$CONTROL_CPUS$WORKER_CPUS" ]]; then
  CPU_NOTE="accumd and daemon_bench on CPU ${CONTROL_CPUS:-any} (taskset); the training worker moved to CPU ${WORKER_CPUS:-none} at its first step (other users' processes still run on every core)"
fi
{
  if [[ "$APPEND" != 1 ]]; then
    echo "# accumd control-plane benchmark"
    echo
  fi
  echo "## Run: $LABEL"
  echo
  echo "Written by \`bench/daemon/run.sh\` ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(cd "$ROOT" && git rev-parse --short HEAD))."
  echo
  echo "- Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
  echo "- Shared machine: other engineers compile and test on the same 2 cores while this runs."
  echo "- Load before: \`$LOAD_BEFORE\`"
  echo "- 1-min load average during the run: $LOAD_DURING"
  echo "- Load after:  \`$LOAD_AFTER\`"
  echo "- CPUs: $CPU_NOTE"
  echo "- Command: \`${CONTROL_CPUS:+CONTROL_CPUS=$CONTROL_CPUS }${WORKER_CPUS:+WORKER_CPUS=$WORKER_CPUS }ROUNDS=$ROUNDS CLIENTS=$CLIENTS CHANNELS=$CHANNELS CONDITIONS=$CONDITIONS MAX_STEPS=$MAX_STEPS SKIP_STEPS=$SKIP_STEPS STARTUP_RUNS=$STARTUP_RUNS bench/daemon/run.sh\`"
  echo "  which runs \`daemon_bench --server 127.0.0.1:PORT --token-file TOKEN --spec spec.json --rounds $ROUNDS --clients $CLIENTS --channels $CHANNELS --conditions $CONDITIONS --skip-steps $SKIP_STEPS --startup-runs $STARTUP_RUNS\`"
  echo "  against \`$ACCUMD_BIN --listen 127.0.0.1:0 --token-file TOKEN --slots 1\` (OMP_NUM_THREADS=1; workers inherit it)."
  echo "- Wall time ${ELAPSED} s. CPU time used: accumd ${ACCUMD_CPU} s; daemon_bench (the 64 clients + WatchJob) ${BENCH_USER} s user + ${BENCH_SYS} s system."
  echo "- Job: GPT-2 2 layers, 4 heads, d_model 128, vocab 256 (TEXT_BYTES), B=4 x T=64, K=4 (1024 tokens per optimizer step), $MAX_STEPS steps, 1 rank, CPU fp32, one OpenMP thread."
  echo "- tokens/s (mean) = sum of tokens / sum of step_ms over steps $((SKIP_STEPS + 1))..$MAX_STEPS of metrics.jsonl; (median step) = median of those steps' tokens_per_s; (WatchJob wall) = the same steps timed by their metrics events' arrival at the client (includes the worker's reporting)."
  echo "- GetJob latency: each client's call time (send to reply, steady clock), counted from the job's first step to its end; each client's first call (connection set-up) not counted. Conditions: none = no load; closed = back-to-back calls; paced:HZ = each client calls HZ times a second."
  echo
  cat "$WORK/tables.md"
  echo
} >"$TMP_OUT"
if [[ "$APPEND" == 1 && -f "$OUT" ]]; then cat "$TMP_OUT" >>"$OUT"; else cp "$TMP_OUT" "$OUT"; fi
echo "run.sh: wrote $OUT"
