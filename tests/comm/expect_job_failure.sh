#!/usr/bin/env bash
# tests/comm/expect_job_failure.sh — runs a command (an mpirun job) that must FAIL:
# passes only when it exits non-zero within MAX_SECONDS and its output matches REGEX
# (grep -E). A job still running after 3 x MAX_SECONDS is killed and counts as a hang.
#
#   expect_job_failure.sh MAX_SECONDS REGEX -- command args...
set -u
max_seconds=$1
regex=$2
shift 2
[[ "${1:-}" == "--" ]] && shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s.%N)
timeout --kill-after=5 $((max_seconds * 3)) "$@" >"$log" 2>&1
rc=$?
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
cat "$log"
echo "---- exit status ${rc} after ${elapsed} s (limit ${max_seconds} s)"
if [[ $rc -eq 0 ]]; then
  echo "FAIL: the job exited 0 although a rank failed"; exit 1
fi
# 124/137 are also what timeout(1) returns, but a killed rank makes mpirun return 137
# too: only the elapsed time tells a hang.
if awk -v e="$elapsed" -v m="$max_seconds" 'BEGIN { exit !(e >= 3 * m - 1) }'; then
  echo "FAIL: the job hung (killed by timeout after $((max_seconds * 3)) s)"; exit 1
fi
if awk -v e="$elapsed" -v m="$max_seconds" 'BEGIN { exit !(e > m) }'; then
  echo "FAIL: the job took ${elapsed} s to fail (limit ${max_seconds} s)"; exit 1
fi
if ! grep -Eq -- "$regex" "$log"; then
  echo "FAIL: the output does not match /${regex}/"; exit 1
fi
echo "PASS: non-zero exit within the limit, output matches /${regex}/"
