#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test (as root: tests build network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Tests are type-checked too (vitest itself only strips types).
npx tsc -p tsconfig.test.json
report="$(mktemp -t nsmesh-vitest-XXXXXX.json)"
trap 'rm -f "$report"' EXIT
status=0
npx vitest run --reporter=default --reporter=json --outputFile="$report" "$@" || status=$?
# One plain closing line that any CI reader understands.
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + (r.numTodoTests ?? 0)} skipped`);
' "$report" || true
exit $status
