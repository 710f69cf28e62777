#!/usr/bin/env bash
# The main job: a demo mesh on this one machine (run as root). `npm run demo -- secure-intranet` runs the
# seed's client → firewall → VPN gateway → intranet example instead; `npm run demo -- interdomain` a pod in
# domain cluster.test reaching a service on an on-prem host in domain onprem.test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
if [ "${1:-}" = "secure-intranet" ]; then
  shift
  exec node dist/examples/demo/secure-intranet.js "$@"
fi
if [ "${1:-}" = "interdomain" ]; then
  shift
  exec node dist/examples/demo/interdomain.js "$@"
fi
exec node dist/examples/demo/main.js "$@"
