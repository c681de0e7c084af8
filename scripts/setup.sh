#!/usr/bin/env bash
# Installs what Drover and its tests need on Debian 12 with Node 20 (run as root), then the
# npm dependencies and the build. Safe to repeat: installs only what is missing.
#
# It never stops or kills a service it did not start: while it installs packages, a temporary
# /usr/sbin/policy-rc.d (exit 101, "action forbidden") keeps the packages' maintainer scripts from
# starting their daemons (both invoke-rc.d and deb-systemd-invoke honour it); an existing
# policy-rc.d is left as it is. A daemon that already runs (a user's own etcd or Prometheus on a
# default port) keeps running: the tests start their own daemons on free ports.
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

POLICY=/usr/sbin/policy-rc.d
POLICY_MARK='# drover setup: temporary, removed when the install ends'
ours_policy=0
remove_policy() {
  # Only the file this run created (the mark is checked so a file someone else wrote meanwhile stays).
  if [ "$ours_policy" = 1 ] && grep -qxF "$POLICY_MARK" "$POLICY" 2>/dev/null; then rm -f "$POLICY"; fi
}

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]} (their daemons are not started: the tests start their own)"
  export DEBIAN_FRONTEND=noninteractive
  if [ ! -e "$POLICY" ]; then
    trap remove_policy EXIT
    printf '#!/bin/sh\n%s\nexit 101\n' "$POLICY_MARK" > "$POLICY"
    chmod 755 "$POLICY"
    ours_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  remove_policy
  ours_policy=0
  trap - EXIT
fi

npm ci --no-audit --no-fund
npm run build
