#!/usr/bin/env bash
# Installs what Drover and its tests need on Debian 12 with Node 20 (run as root), then the
# npm dependencies and the build. Safe to repeat: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have etcd || need+=(etcd-server)                    # control plane (real etcd 3.4)
have nbd-server || need+=(nbd-server)               # shared storage tests
have tgtd || need+=(tgt)                             # iSCSI target for QEMU's initiator (test/storage/iscsi.test.ts)
dpkg -s qemu-block-extra >/dev/null 2>&1 || need+=(qemu-block-extra)  # QEMU's iSCSI initiator (a Recommends of qemu-system-x86)
have qemu-nbd || need+=(qemu-utils)                 # qemu-nbd, qemu-img
have qemu-system-x86_64 || need+=(qemu-system-x86)  # QEMU driver (TCG here)
have prometheus || need+=(prometheus)               # metrics tests (prometheus + promtool)
have iperf3 || need+=(iperf3)                       # raw TCP baseline for npm run bench
have gcc || need+=(gcc)                             # builds the bare-metal QEMU guest
have ld || need+=(binutils)
have ip || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's packages start their own daemons on install; Drover's tests start their own.
for svc in etcd nbd-server tgt prometheus prometheus-node-exporter; do
  (systemctl stop "$svc" 2>/dev/null || service "$svc" stop 2>/dev/null || true) >/dev/null 2>&1
done
pkill -x etcd 2>/dev/null || true
pkill -x prometheus 2>/dev/null || true

npm ci --no-audit --no-fund
npm run build
