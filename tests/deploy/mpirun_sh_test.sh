#!/usr/bin/env bash
# tests/deploy/mpirun_sh_test.sh — deploy/mpirun.sh, the README's launch script for users who
# run the worker under mpirun themselves, starts 2 real ranks of accum-worker on this host
# (as root it must add --allow-run-as-root itself) and they train a tiny job to its end
# together: exit 0, a metrics line for every step that says world_size 2, and a complete
# checkpoint of the last step. A rank count that is not a number is refused by name.
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
echo "PASS"
