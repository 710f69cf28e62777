#!/usr/bin/env bash
# The main job: a demo mesh on this one machine (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
exec node dist/examples/demo/main.js "$@"
