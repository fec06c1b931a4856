#!/usr/bin/env bash
# Builds accumd and runs the whole test suite: unit tests, mpirun tests, daemon
# end-to-end tests on loopback, and the gpu tests (SKIPPED with the reason when no
# GPU is visible).
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/build.sh
# One OpenMP thread per process: mpirun tests start up to 4 ranks on 2 cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure --timeout 900 "$@"
