#!/usr/bin/env bash
# The main job: a demo mesh on this one machine (run as root). `npm run demo -- secure-intranet` runs the
# seed's client → firewall → VPN gateway → intranet example instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
if [ "${1:-}" = "secure-intranet" ]; then
  shift
  exec node dist/examples/demo/secure-intranet.js "$@"
fi
exec node dist/examples/demo/main.js "$@"
