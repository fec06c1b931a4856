#!/bin/sh
# Builds comm_bench against an already built accum_comm and runs it on 4 CPU ranks.
# Usage: bench/comm/run_comm_bench.sh BUILD_DIR [gradient_floats] [layers]
set -e
here=$(dirname "$0")
build=${1:?build dir with lib/libaccum_comm.a}
shift
mpicxx -DOMPI_SKIP_MPICXX -std=c++20 -O2 -Wall -Wextra -Werror -I"$here/../.." "$here/comm_bench.cpp" \
  "$build/lib/libaccum_comm.a" -lspdlog -lfmt -pthread -o "$build/comm_bench"
mpirun --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader \
  -np 4 "$build/comm_bench" "$@"
