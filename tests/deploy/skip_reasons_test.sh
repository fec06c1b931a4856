#!/usr/bin/env bash
# tests/deploy/skip_reasons_test.sh — deploy/skip_reasons.sh names the reason of
# every skipped test, whatever its label: it runs ctest on a throwaway project whose
# tests skip the ways this repository's do (a GoogleTest skip, an exit 77 that
# prints "SKIPPED: ...", as the Python client test does, an exit 77 that says
# nothing else) next to a passing and a failing test, and compares the report.
# Usage: skip_reasons_test.sh SOURCE_DIR CMAKE CTEST
set -euo pipefail
source_dir=$1 cmake=$2 ctest=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.19)
project(skips NONE)
enable_testing()
foreach(n 1 2)
  add_test(NAME Gpu.Case${n} COMMAND sh -c "echo '[ RUN      ] Gpu.Case${n}'; echo 'gpu_test.cpp:18: Skipped'; echo 'no GPU is visible'; echo '[  SKIPPED ] Gpu.Case${n} (0 ms)'")
  set_tests_properties(Gpu.Case${n} PROPERTIES LABELS gpu SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")
endforeach()
add_test(NAME python_client COMMAND sh -c "echo 'starting'; echo 'SKIPPED: cannot import grpc; apt-get install python3-grpcio'; exit 77")
set_tests_properties(python_client PROPERTIES LABELS daemon SKIP_RETURN_CODE 77)
add_test(NAME quiet_skip COMMAND sh -c "echo 'looking for torch'; echo 'torch is missing'; exit 77")
set_tests_properties(quiet_skip PROPERTIES LABELS reference SKIP_RETURN_CODE 77)
add_test(NAME passes COMMAND sh -c "echo fine")
add_test(NAME fails COMMAND sh -c "echo 'SKIPPED: not a skip'; exit 1")
EOF
"$cmake" -S "$work" -B "$work/build" > /dev/null
"$ctest" --test-dir "$work/build" > "$work/ctest.txt" 2>&1 || true  # `fails` fails

"$source_dir/deploy/skip_reasons.sh" "$work/build" "$work/ctest.txt" > "$work/report.txt"
cat > "$work/expected.txt" <<'EOF'
skip reason: no GPU is visible [Gpu.Case1 and 1 more]
skip reason: cannot import grpc; apt-get install python3-grpcio [python_client]
skip reason: torch is missing [quiet_skip]
EOF
if ! diff -u "$work/expected.txt" "$work/report.txt"; then
  echo "FAIL: skip_reasons.sh's report differs (- expected, + got); ctest said:"
  cat "$work/ctest.txt"
  exit 1
fi
echo "PASS: every skipped test's reason is reported, once per reason"
