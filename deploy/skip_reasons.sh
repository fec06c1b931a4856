#!/usr/bin/env bash
# Says why each skipped test was skipped, whatever its label: ctest itself prints
# only "Skipped". Usage: skip_reasons.sh BUILD_DIR CTEST_OUTPUT, where CTEST_OUTPUT
# holds what the last `ctest --test-dir BUILD_DIR` printed (its "did not run" list
# names the skipped tests; BUILD_DIR/Testing/Temporary/LastTest.log has their output).
#
# A test's reason is, from its output: a GoogleTest skip's message (the lines after
# "file:line: Skipped"), else the text after "SKIPPED: " (the exit-77 tests), else its
# last line. One line per reason: "skip reason: REASON [TEST]" or "[TEST and N more]".
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 BUILD_DIR CTEST_OUTPUT" >&2
  exit 2
fi
log=$1/Testing/Temporary/LastTest.log
[ -f "$log" ] || exit 0

awk '
  # The ctest output: "  62 - NAME (Skipped)" in its list of tests that did not run.
  FILENAME == ARGV[1] {
    if ($0 ~ /^[ \t]*[0-9]+ - .+ \(Skipped\)$/) {
      sub(/^[ \t]*[0-9]+ - /, ""); sub(/ \(Skipped\)$/, "")
      names[++count] = $0; wanted[$0] = count
    }
    next
  }
  # LastTest.log, a block per test: "N/M Testing: NAME", ..., "Output:", a rule,
  # the output, "<end of output>".
  /^[0-9]+\/[0-9]+ Testing: / {
    name = substr($0, index($0, ": ") + 2); state = 0
    message = ""; in_message = 0; tagged = ""; last = ""
    next
  }
  state == 0 && $0 == "Output:" { state = 1; next }
  state == 1 { state = 2; next }  # the rule under "Output:"
  state == 2 && $0 == "<end of output>" {
    state = 3
    if (name in wanted) reason[wanted[name]] = message != "" ? message : tagged != "" ? tagged : last
    next
  }
  state == 2 {
    line = $0
    sub(/[ \t\r]+$/, "", line)
    if (in_message) {
      if (line ~ /^\[  SKIPPED \]/) in_message = 0
      else if (line != "") message = message == "" ? line : message " " line
    } else if (message == "" && line ~ /: Skipped$/) {
      in_message = 1
    }
    if (tagged == "" && index(line, "SKIPPED: ") > 0) tagged = substr(line, index(line, "SKIPPED: ") + 9)
    if (line != "") last = line
  }
  END {
    for (i = 1; i <= count; ++i) {
      why = (i in reason) ? reason[i] : "(its output is not in LastTest.log)"
      if (!(why in tests)) { order[++reasons] = why; first[why] = names[i] }
      tests[why]++
    }
    for (r = 1; r <= reasons; ++r) {
      why = order[r]
      more = tests[why] > 1 ? " and " (tests[why] - 1) " more" : ""
      printf "skip reason: %s [%s%s]\n", why, first[why], more
    }
  }
' "$2" "$log"
