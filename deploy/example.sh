#!/usr/bin/env bash
# The main job, end to end: build, start accumd with its embedded SQLite store on
# loopback, submit the example job with accumctl and watch it train to the end.
# The daemon keeps running afterwards (state in $STATE_DIR) so you can query it:
#   build/bin/accumctl --server 127.0.0.1:7070 list
# Stop it with: kill $(cat $STATE_DIR/accumd.pid)
# STATE_DIR (default ~/.accumd) and ACCUMD_ADDR (default 127.0.0.1:7070) choose others; if
# accumd cannot start (the port taken, the state dir another accumd's), the script says why.
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
  ACCUMD_PID=$!
  serving=0
  for _ in $(seq 1 300); do
    if "$BIN/accumctl" --server "$ADDR" list >/dev/null 2>&1; then serving=1; break; fi
    kill -0 "$ACCUMD_PID" 2>/dev/null || break # it exited: its log says why
    sleep 0.1
  done
  if [[ $serving == 0 ]]; then
    # Say so here, with accumd's reason, rather than "serving" and then a failed submit.
    kill "$ACCUMD_PID" 2>/dev/null || true
    echo "example.sh: accumd did not start serving on $ADDR; the end of $STATE_DIR/accumd.log:" >&2
    tail -n 3 "$STATE_DIR/accumd.log" >&2
    echo "example.sh: ACCUMD_ADDR=HOST:PORT picks another address, STATE_DIR=DIR another state dir" >&2
    exit 1
  fi
  echo "$ACCUMD_PID" >"$STATE_DIR/accumd.pid"
  echo "accumd serving on $ADDR (pid $ACCUMD_PID, state in $STATE_DIR; stop it with" \
    "kill \$(cat $STATE_DIR/accumd.pid))"
fi
JOB=$("$BIN/accumctl" --server "$ADDR" submit "$SPEC")
echo "submitted $SPEC as $JOB; watching it train (Ctrl-C stops watching, not the job)"
"$BIN/accumctl" --server "$ADDR" watch "$JOB"
"$BIN/accumctl" --server "$ADDR" status "$JOB"
