#!/usr/bin/env bash
# tests/deploy/example_test.sh — the README's first command, less the install and the build:
# deploy/example.sh (SKIP_BUILD=1, this build's binaries) starts a real accumd on a free
# loopback port with a fresh state dir, submits deploy/examples/tiny-bytes.json and watches
# it to the end. Asserts what the README promises: the script exits 0, the job SUCCEEDED at
# step 150 with complete checkpoints, the loss fell from ln 256 ≈ 5.5 to below 2.8 (the README
# says about 2.4), and the daemon is still serving afterwards for the queries it shows. Then
# the script once more with an accumd that cannot start: it says why, and exits 1.
# Usage: example_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
source_dir=$1 build_dir=$2
work=$(mktemp -d)
cleanup() {
  [[ -f "$work/state/accumd.pid" ]] && kill "$(cat "$work/state/accumd.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
addr=127.0.0.1:$port
status=0
SKIP_BUILD=1 BUILD_DIR=$build_dir STATE_DIR=$work/state ACCUMD_ADDR=$addr \
  "$source_dir/deploy/example.sh" > "$work/out.txt" 2>&1 || status=$?
cat "$work/out.txt"
[[ $status -eq 0 ]] || fail "deploy/example.sh exited $status"
grep -q "accumd serving on $addr" "$work/out.txt" || fail "the script did not start accumd on $addr"

job=$(sed -n 's/^submitted .* as \(job-[0-9]*\);.*/\1/p' "$work/out.txt")
[[ -n $job ]] || fail "no 'submitted ... as job-N' line"
grep -q "^state: *SUCCEEDED" "$work/out.txt" || fail "the status after watch is not SUCCEEDED"
grep -q "^progress: *step 150/150" "$work/out.txt" || fail "the job did not reach step 150/150"

job_dir=$work/state/jobs/$job
[[ -f $job_dir/checkpoints/step_00000150/manifest.json ]] ||
  fail "no complete checkpoint of step 150 in $job_dir/checkpoints"
python3 - "$job_dir/metrics.jsonl" <<'PY' || fail "the loss curve is not the README's"
import json, math, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith('{"step"')]
first, last = rows[0], rows[-1]
print(f"loss step {first['step']}: {first['loss']:.3f}, step {last['step']}: {last['loss']:.3f}")
assert last["step"] == 150, last["step"]
assert abs(first["loss"] - math.log(256)) < 0.3, f"first loss {first['loss']} is not ~ln 256"
assert last["loss"] < 2.8, f"last loss {last['loss']} is not below 2.8"
PY

# The daemon keeps running for the README's queries.
list=$("$build_dir/bin/accumctl" --server "$addr" list) || fail "accumctl list failed after the job"
echo "$list"
grep -q "$job.*SUCCEEDED" <<< "$list" || fail "accumctl list does not show $job SUCCEEDED"

# An accumd that cannot start (here: the state dir is the running one's, on another port) is
# reported by the script with accumd's reason, not announced as serving before a submit that
# cannot reach it; and the running accumd's pid file still names it (the README's way to stop it).
pid_before=$(cat "$work/state/accumd.pid")
other_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
status=0
SKIP_BUILD=1 BUILD_DIR=$build_dir STATE_DIR=$work/state ACCUMD_ADDR=127.0.0.1:$other_port \
  "$source_dir/deploy/example.sh" > "$work/second.txt" 2>&1 || status=$?
cat "$work/second.txt"
[[ $status -eq 1 ]] || fail "deploy/example.sh with an accumd that cannot start exited $status, not 1"
! grep -q "accumd serving on" "$work/second.txt" || fail "the script announced an accumd that is not serving"
grep -q "accumd did not start serving on 127.0.0.1:$other_port" "$work/second.txt" ||
  fail "the script did not say that accumd did not start"
grep -q "another accumd (pid $pid_before) uses the state dir" "$work/second.txt" ||
  fail "the script did not show accumd's reason from its log"
[[ $(cat "$work/state/accumd.pid") == "$pid_before" ]] ||
  fail "accumd.pid no longer names the running accumd $pid_before"
kill -0 "$pid_before" || fail "the running accumd is gone"
echo "PASS"
