#!/usr/bin/env bash
# Configures and builds accumd into build/ (binaries in build/bin/). The CUDA back end
# is compiled when nvcc is found (/usr/local/cuda); ACCUM_CUDA_ARCHS picks architectures.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  ${ACCUM_CUDA_ARCHS:+-DACCUM_CUDA_ARCHS="$ACCUM_CUDA_ARCHS"} ${CMAKE_ARGS:-} >/dev/null
ninja -C "$BUILD_DIR" -j"$(nproc)"
