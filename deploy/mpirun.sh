#!/usr/bin/env bash
# Launches N ranks of accum-worker with Open MPI on this host or a hostfile.
#   deploy/mpirun.sh 4 job.json               # 4 ranks here
#   HOSTFILE=hosts deploy/mpirun.sh 16 job.json
# Extra mpirun arguments: MPIRUN_ARGS="--mca btl_tcp_if_include eth0".
# Ctrl-C (or SIGTERM or SIGHUP to this script) stops the job gracefully: every rank finishes its
# optimizer step, writes a checkpoint and exits 0. mpirun's own Ctrl-C would kill the ranks
# a second later, so mpirun runs in a session of its own and gets SIGUSR1 instead, which Open
# MPI forwards to every rank. A second Ctrl-C kills the job. kill -9 of this script stops the
# job gracefully as well.
# Every rank gets GOMP_SPINCOUNT=10000 (a short OpenMP spin: ranks that share cores with other
# work stay fast; bench/RESULTS.md 1) unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set here.
set -euo pipefail
NP=${1:?usage: mpirun.sh NP SPEC.json}
SPEC=${2:?usage: mpirun.sh NP SPEC.json}
[[ "$NP" =~ ^[1-9][0-9]*$ ]] || { echo "mpirun.sh: NP '$NP': expected a rank count >= 1" >&2; exit 2; }
[ -f "$SPEC" ] || { echo "mpirun.sh: $SPEC: no such spec file" >&2; exit 2; }
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/build/bin}
ARGS=(-np "$NP" --bind-to none)
[ "$(id -u)" = 0 ] && ARGS+=(--allow-run-as-root)
[ "$NP" -gt "$(nproc)" ] && ARGS+=(--oversubscribe)
[ -n "${HOSTFILE:-}" ] && ARGS+=(--hostfile "$HOSTFILE")
if [ -n "${OMP_WAIT_POLICY:-}" ]; then ARGS+=(-x OMP_WAIT_POLICY)
else ARGS+=(-x GOMP_SPINCOUNT="${GOMP_SPINCOUNT:-10000}"); fi
# Killed outright (kill -9: no trap runs), this script would leave mpirun running with no one
# to stop it: setpriv gives mpirun SIGUSR1 as its parent-death signal, so the job then stops
# gracefully too. (util-linux's setpriv; without it, mpirun runs on.)
ORPHAN_SIGNAL=()
command -v setpriv > /dev/null && ORPHAN_SIGNAL=(setpriv --pdeathsig USR1)
# shellcheck disable=SC2086
setsid "${ORPHAN_SIGNAL[@]}" mpirun "${ARGS[@]}" ${MPIRUN_ARGS:-} -x OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" \
  "$BIN/accum-worker" --spec "$SPEC" < /dev/null &
MPIRUN_PID=$!
stop_gracefully() {
  echo "mpirun.sh: stopping: each rank finishes its step and writes a checkpoint" \
    "(Ctrl-C again to kill the job)" >&2 || true  # the terminal may be gone (SIGHUP)
  trap 'kill -TERM "$MPIRUN_PID" 2>/dev/null || true' INT TERM HUP
  kill -USR1 "$MPIRUN_PID" 2>/dev/null || true
}
trap stop_gracefully INT TERM HUP
# A trap interrupts `wait`: wait again until mpirun itself has ended, then exit with its
# status (bash keeps it for a later `wait` of the same pid).
while kill -0 "$MPIRUN_PID" 2>/dev/null; do wait "$MPIRUN_PID" || true; done
status=0
wait "$MPIRUN_PID" || status=$?
exit "$status"
