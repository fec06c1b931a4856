#!/usr/bin/env bash
# Every spec in deploy/examples/ and the one README.md shows pass the worker's validation as
# shipped (accum-worker --print-spec: the shared validator accumd uses too; no data or GPU
# needed), so the README's examples cannot rot. Usage: example_specs_test.sh SOURCE_DIR BUILD_DIR
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

# The spec the README shows (its ```json block) passes too.
readme_spec=$(mktemp --suffix=.json)
trap 'rm -f "$readme_spec"' EXIT
awk '/^```json$/ { inside = 1; next } /^```$/ { inside = 0 } inside' "$src/README.md" > "$readme_spec"
if ! grep -q '"name"' "$readme_spec"; then
  echo "FAIL: no \`\`\`json spec block in README.md"
  status=1
elif ! out="$("$worker" --spec "$readme_spec" --print-spec 2>&1)"; then
  echo "FAIL: README.md's spec is refused:"
  echo "$out" | tail -5
  status=1
else
  echo "ok: README.md's spec"
fi
exit $status
