#!/usr/bin/env bash
# Builds accumd and runs the whole test suite: unit tests, mpirun tests, daemon
# end-to-end tests on loopback, and the gpu tests (SKIPPED when no GPU is visible);
# then says why each skipped test was skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/build.sh
BUILD=${BUILD_DIR:-build}
# One OpenMP thread per process: mpirun tests start up to 4 ranks on 2 cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# Extra arguments go to ctest: ./deploy/test.sh -L daemon runs a subset.
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
status=0
ctest --test-dir "$BUILD" --output-on-failure --timeout 900 "$@" | tee "$summary" || status=$?
# Say why skipped tests were skipped, whatever their label (ctest prints only "Skipped").
./deploy/skip_reasons.sh "$BUILD" "$summary" || true
exit "$status"
