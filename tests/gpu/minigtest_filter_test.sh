#!/usr/bin/env bash
# tests/gpu/minigtest_filter_test.sh CXX ROOT — bench/gpu/minigtest's --gtest_filter selects
# tests as GoogleTest's does (a lease narrows its sanitizer runs with it): a minigtest
# program of three tests runs under several filters, and the tests that ran are compared
# with those GoogleTest would run.
set -uo pipefail
cxx="$1" root="$2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/three.cpp" << 'CPP'
#include <gtest/gtest.h>
TEST(Alpha, One) { EXPECT_EQ(1, 1); }
TEST(Alpha, Two) { EXPECT_EQ(2, 2); }
TEST(Beta, Three) { EXPECT_EQ(3, 3); }
CPP
"$cxx" -std=gnu++20 -Wall -Wextra -Werror -I"$root/bench/gpu/minigtest" "$work/three.cpp" \
  "$root/bench/gpu/minigtest/minigtest_main.cpp" -o "$work/three" || {
  echo "FAILED: the minigtest program does not build" >&2
  exit 1
}
failed=0
expect() {  # FILTER EXPECTED_TESTS (space-separated, in order)
  local ran
  ran="$("$work/three" "--gtest_filter=$1" | sed -n 's/^\[ RUN      \] //p' | tr '\n' ' ')"
  if [[ "${ran% }" != "$2" ]]; then
    echo "FAILED: --gtest_filter='$1' ran '${ran% }', expected '$2'" >&2
    failed=1
  fi
}
expect "" "Alpha.One Alpha.Two Beta.Three"
expect "*" "Alpha.One Alpha.Two Beta.Three"
expect "Alpha.*" "Alpha.One Alpha.Two"
expect "Alpha.One:Beta.*" "Alpha.One Beta.Three"
expect "Alpha.*-Alpha.Two" "Alpha.One"
expect "-Alpha.*" "Beta.Three"
expect "*-Alpha.One:Beta.Three" "Alpha.Two"
expect "Alpha.T?o" "Alpha.Two"
expect "Gamma.*" ""
[[ $failed == 0 ]] && echo "minigtest selects tests as GoogleTest's --gtest_filter does"
exit $failed
