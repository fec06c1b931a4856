#!/usr/bin/env bash
# Builds accumd and runs the whole test suite: unit tests, mpirun tests, daemon
# end-to-end tests on loopback, and the gpu tests (SKIPPED with the reason when no
# GPU is visible).
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/build.sh
BUILD=${BUILD_DIR:-build}
# One OpenMP thread per process: mpirun tests start up to 4 ranks on 2 cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# Say why skipped tests were skipped (ctest itself only prints "Skipped").
ctest --test-dir "$BUILD" -L gpu -V 2>/dev/null | grep -E "^[0-9]+: .*(unavailable|no CUDA|SKIPPED:)" |
  sed -E 's/^[0-9]+: //' | sort | uniq -c | sed 's/^/skip reason: /' || true
ctest --test-dir "$BUILD" --output-on-failure --timeout 900 "$@"
