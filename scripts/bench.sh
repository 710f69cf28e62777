#!/usr/bin/env bash
# The bench command: `npm run bench -- <name>` installs what is missing, builds, and runs dist/bench/<name>.js.
set -euo pipefail
cd "$(dirname "$0")/.."

available() { for f in bench/*.ts; do [ -e "$f" ] && echo "  $(basename "$f" .ts)"; done; }

name="${1:-}"
# Checked against the sources, not dist/, so a typo is refused before the (slow) install and build.
if [[ ! "$name" =~ ^[a-z0-9][a-z0-9-]*$ ]] || [ ! -f "bench/$name.ts" ]; then
  if [ -z "$name" ]; then echo "usage: npm run bench -- <name>" >&2; else echo "unknown bench \"$name\"" >&2; fi
  echo "available benches:" >&2
  available >&2
  exit 2
fi
shift

bash scripts/install-deps.sh
mkdir -p bench/results
exec node "dist/bench/$name.js" "$@"
