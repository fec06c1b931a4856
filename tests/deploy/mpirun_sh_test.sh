#!/usr/bin/env bash
# tests/deploy/mpirun_sh_test.sh — deploy/mpirun.sh, the README's launch script for users who
# run the worker under mpirun themselves, starts 2 real ranks of accum-worker on this host
# (as root it must add --allow-run-as-root itself) and they train a tiny job to its end
# together: exit 0, a metrics line for every step that says world_size 2, and a complete
# checkpoint of the last step. A rank count that is not a number is refused by name. Ctrl-C
# (SIGINT to the script's process group, as a terminal sends it) stops the job gracefully:
# every rank finishes its step, the step is checkpointed, and the script exits 0. kill -9 of
# the script stops the job the same way (mpirun's parent-death signal).
# Usage: mpirun_sh_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
source_dir=$1 build_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

cat > "$work/job.json" <<'JSON'
{
  "name": "mpirun-sh",
  "model": {"n_layer": 2, "n_head": 2, "d_model": 32, "vocab_size": 256, "max_seq_len": 32},
  "data": {"train": "/usr/share/common-licenses/*", "format": "TEXT_BYTES", "shuffle": true},
  "batch": {"micro_batch_size": 2, "seq_len": 32, "tokens_per_update": 256},
  "optimizer": {"lr": 0.002, "warmup_steps": 2, "schedule": "cosine"},
  "max_steps": 6, "seed": 3,
  "checkpoint": {"dir": "checkpoints", "every_steps": 3, "keep_last": 2},
  "metrics_path": "metrics.jsonl", "device": "CPU", "precision": "FP32"
}
JSON
status=0
BIN=$build_dir/bin "$source_dir/deploy/mpirun.sh" 2 "$work/job.json" > "$work/out.txt" 2>&1 ||
  status=$?
cat "$work/out.txt"
[[ $status -eq 0 ]] || fail "deploy/mpirun.sh 2 exited $status"
python3 - "$work/metrics.jsonl" <<'PY' || fail "the metrics are not those of 2 ranks to step 6"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith('{"step"')]
assert [r["step"] for r in rows] == list(range(1, 7)), [r["step"] for r in rows]
assert all(r["world_size"] == 2 for r in rows), [r["world_size"] for r in rows]
# 256 tokens per update / (2 ranks x 2 x 32) = 2 micro-batches per rank.
assert all(r["grad_accum_steps"] == 2 for r in rows), [r["grad_accum_steps"] for r in rows]
print("steps 1..6 on 2 ranks, K = 2")
PY
[[ -f $work/checkpoints/step_00000006/manifest.json ]] || fail "no complete checkpoint of step 6"

# A rank count that is not a number: 2 and a message naming it, not a bash error.
status=0
BIN=$build_dir/bin "$source_dir/deploy/mpirun.sh" four "$work/job.json" > "$work/bad.txt" 2>&1 ||
  status=$?
[[ $status -eq 2 ]] || fail "deploy/mpirun.sh four exited $status, expected 2"
grep -q "NP 'four': expected a rank count >= 1" "$work/bad.txt" || fail "$(cat "$work/bad.txt")"
echo "a rank count 'four' is refused by name"

# Ctrl-C: the script and mpirun's ranks keep running until the step is checkpointed.
sed -e 's/"max_steps": 6/"max_steps": 100000/' -e 's/"checkpoints"/"long-checkpoints"/' \
  -e 's/"metrics.jsonl"/"long.jsonl"/' "$work/job.json" > "$work/long.json"
# Job control: the script gets a process group of its own, as a terminal's foreground job
# does, and keeps SIGINT (a plain background job would start with SIGINT ignored).
set -m
BIN=$build_dir/bin "$source_dir/deploy/mpirun.sh" 2 "$work/long.json" > "$work/long.txt" 2>&1 &
script=$!
set +m
steps() { grep -c '^{"step"' "$work/long.jsonl" 2>/dev/null || true; }
for _ in $(seq 600); do [[ $(steps) -ge 2 ]] && break; sleep 0.2; done
[[ $(steps) -ge 2 ]] || { kill -KILL -- -"$script"; fail "no 2 steps: $(cat "$work/long.txt")"; }
kill -INT -- -"$script"  # the whole foreground group, as a terminal's Ctrl-C
status=0
wait "$script" || status=$?
cat "$work/long.txt"
[[ $status -eq 0 ]] || fail "deploy/mpirun.sh exited $status after Ctrl-C, expected 0"
last=$(grep '^{"step"' "$work/long.jsonl" | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["step"])')
ckpt=$work/long-checkpoints/$(printf 'step_%08d' "$last")
[[ -f $ckpt/manifest.json ]] || fail "no complete checkpoint of the last step, $last"
[[ $(cat "$work/long-checkpoints/latest") == $(basename "$ckpt") ]] || fail "latest is not step $last"
grep -q "stopped at step $last (checkpointed)" "$work/long.txt" || fail "no 'stopped at step $last'"
! pgrep -f "accum-worker --spec $work/long.json" > /dev/null || fail "a rank outlived the script"
echo "Ctrl-C stopped the job at step $last with a complete checkpoint, exit 0"

# kill -9 of the script (no trap can run): mpirun must not run on with no one to stop it. It
# gets SIGUSR1 as its parent-death signal, so the ranks finish the step and checkpoint it.
sed -e 's/long-checkpoints/orphan-checkpoints/' -e 's/long.jsonl/orphan.jsonl/' \
  "$work/long.json" > "$work/orphan.json"
BIN=$build_dir/bin "$source_dir/deploy/mpirun.sh" 2 "$work/orphan.json" > "$work/orphan.txt" 2>&1 &
script=$!
orphan_steps() { grep -c '^{"step"' "$work/orphan.jsonl" 2>/dev/null || true; }
for _ in $(seq 600); do [[ $(orphan_steps) -ge 2 ]] && break; sleep 0.2; done
[[ $(orphan_steps) -ge 2 ]] || { pkill -KILL -f "$work/orphan.json"; fail "no 2 steps: $(cat "$work/orphan.txt")"; }
kill -KILL "$script"
wait "$script" 2>/dev/null || true
for _ in $(seq 300); do pgrep -f "$work/orphan.json" > /dev/null || break; sleep 0.2; done
if pgrep -f "$work/orphan.json" > /dev/null; then
  pgrep -af "$work/orphan.json"
  pkill -KILL -f "$work/orphan.json"
  fail "mpirun or a rank outlived kill -9 of the script by 60 s"
fi
last=$(grep '^{"step"' "$work/orphan.jsonl" | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["step"])')
[[ $(cat "$work/orphan-checkpoints/latest") == $(printf 'step_%08d' "$last") ]] ||
  fail "after kill -9 of the script, latest is not the last step, $last"
echo "kill -9 of the script stopped the job at step $last with a complete checkpoint"
echo "PASS"
