#!/usr/bin/env bash
# Launches N ranks of accum-worker with Open MPI on this host or a hostfile.
#   deploy/mpirun.sh 4 job.json               # 4 ranks here
#   HOSTFILE=hosts deploy/mpirun.sh 16 job.json
# Extra mpirun arguments: MPIRUN_ARGS="--mca btl_tcp_if_include eth0".
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
# shellcheck disable=SC2086
exec mpirun "${ARGS[@]}" ${MPIRUN_ARGS:-} -x OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" \
  "$BIN/accum-worker" --spec "$SPEC"
