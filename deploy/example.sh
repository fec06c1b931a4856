#!/usr/bin/env bash
# The main job, end to end: build, start accumd with its embedded SQLite store on
# loopback, submit the example job with accumctl and watch it train to the end.
# The daemon keeps running afterwards (state in $STATE_DIR) so you can query it:
#   build/bin/accumctl --server 127.0.0.1:7070 list
# Stop it with: kill $(cat $STATE_DIR/accumd.pid)
# SKIP_BUILD=1 uses the binaries already in $BUILD_DIR (the ctest deploy.example_sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ ${SKIP_BUILD:-0} == 1 ]] || ./deploy/build.sh
BIN=${BUILD_DIR:-build}/bin
STATE_DIR=${STATE_DIR:-$HOME/.accumd}
ADDR=${ACCUMD_ADDR:-127.0.0.1:7070}
SPEC=${1:-deploy/examples/tiny-bytes.json}
mkdir -p "$STATE_DIR"

if ! "$BIN/accumctl" --server "$ADDR" list >/dev/null 2>&1; then
  nohup "$BIN/accumd" --listen "$ADDR" --state-dir "$STATE_DIR" >>"$STATE_DIR/accumd.log" 2>&1 &
  echo $! >"$STATE_DIR/accumd.pid"
  for _ in $(seq 1 100); do
    "$BIN/accumctl" --server "$ADDR" list >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "accumd serving on $ADDR (pid $(cat "$STATE_DIR/accumd.pid"), state in $STATE_DIR)"
fi
JOB=$("$BIN/accumctl" --server "$ADDR" submit "$SPEC")
echo "submitted $SPEC as $JOB; watching it train (Ctrl-C stops watching, not the job)"
"$BIN/accumctl" --server "$ADDR" watch "$JOB"
"$BIN/accumctl" --server "$ADDR" status "$JOB"
