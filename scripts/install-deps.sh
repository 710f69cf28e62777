#!/usr/bin/env bash
# Installs what nsmesh needs on a fresh Debian machine: system packages (only when missing) and npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v wireguard-go >/dev/null || need+=(wireguard-go wireguard-tools)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v nsenter >/dev/null || need+=(util-linux)
command -v etcd >/dev/null || need+=(etcd-server)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v nft >/dev/null || need+=(nftables)
[ -x /usr/lib/cni/ptp ] || need+=(containernetworking-plugins)
# gRPC's C core, the independent peer of the wire-interop tests (test/api/interop-grpc-core.test.ts).
/usr/bin/python3 -c 'import grpc' 2>/dev/null || need+=(python3-grpcio)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "nsmesh needs root to install: ${need[*]}" >&2; exit 1; fi
  echo "installing Debian packages: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run --silent build
