#!/usr/bin/env bash
# tests/gpu/minigtest_compile.sh CXX ROOT CUDA_INCLUDE — compiles (syntax only) every
# tests/gpu source the way bench/gpu/CMakeLists.txt does on a GPU host without GoogleTest:
# against bench/gpu/minigtest and naive_blas, warnings as errors. A test that uses a
# GoogleTest macro minigtest lacks fails here instead of in a lease's first minute.
set -uo pipefail
cxx="$1" root="$2" cuda_include="$3"
failed=0
for source in "$root"/tests/gpu/*.cpp "$root"/bench/gpu/gpt2_step.cpp; do
  if ! "$cxx" -fsyntax-only -std=gnu++20 -Wall -Wextra -Werror -fopenmp -DACCUM_HAVE_CUDA=1 \
      -I"$root" -I"$root/bench/gpu/naive_blas" -I"$root/bench/gpu/minigtest" \
      -isystem "$cuda_include" "$source"; then
    echo "FAILED: $source does not compile against minigtest" >&2
    failed=1
  fi
done
[[ $failed == 0 ]] && echo "every tests/gpu source compiles against minigtest"
exit $failed
