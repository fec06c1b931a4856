#!/bin/sh
# Builds ops_bench against an already built accum_kernels and runs it next to the
# PyTorch twin (Debian python3-torch), both on 2 threads.
# Usage: bench/cpu_ops/run.sh BUILD_DIR [small|124m]
set -e
here=$(dirname "$0")
build=${1:?build dir with lib/libaccum_kernels.a}
config=${2:-small}
c++ -std=c++20 -O2 -fopenmp -I"$here/../.." -I/usr/include/x86_64-linux-gnu/openblas-pthread \
  "$here/ops_bench.cpp" "$build/lib/libaccum_kernels.a" -lopenblas -o "$build/ops_bench"
OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 "$build/ops_bench" "$config"
OMP_NUM_THREADS=2 /usr/bin/python3 "$here/torch_ops_bench.py" "$config"
