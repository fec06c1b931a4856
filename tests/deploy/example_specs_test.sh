#!/usr/bin/env bash
# Every spec in deploy/examples/ passes the worker's validation as shipped (accum-worker
# --print-spec: the shared validator accumd uses too; no data or GPU needed), so the README's
# examples cannot rot. Usage: example_specs_test.sh SOURCE_DIR BUILD_DIR
set -uo pipefail
src="${1:?source dir}" build="${2:?build dir}"
worker="$build/bin/accum-worker"
[[ -x "$worker" ]] || { echo "no $worker"; exit 1; }
status=0 count=0
for spec in "$src"/deploy/examples/*.json; do
  count=$((count + 1))
  if ! out="$("$worker" --spec "$spec" --print-spec 2>&1)"; then
    echo "FAIL: $spec is refused:"
    echo "$out" | tail -5
    status=1
  elif ! grep -q '"name"' <<< "$out"; then
    echo "FAIL: $spec: --print-spec printed no spec"
    status=1
  else
    echo "ok: $spec"
  fi
done
[[ $count -ge 2 ]] || { echo "FAIL: expected the example specs, found $count"; status=1; }
exit $status
