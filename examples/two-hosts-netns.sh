#!/usr/bin/env bash
# Two "hosts" on one machine: network namespaces vm-src and vm-dst joined by a
# veth pair (192.0.2.1 <-> 192.0.2.2, a documentation range that leaves this
# machine's namespaces never). Each side runs in its own process and namespace
# with simulated devices and a guest-memory file; afterwards the state dumps
# and the memory files are compared. Needs root; cleans up after itself.
# Usage: sudo examples/two-hosts-netns.sh   (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
. examples/common.sh
[ "$(id -u)" -eq 0 ] || { echo "needs root (ip netns)"; exit 1; }
bin=$(example_binary -c release)
two_hosts vfio

# 192.0.2.x is not loopback, so the published development set is refused here:
# make a throwaway set (its keys never leave $work) with the same names.
certs/make-dev-certs.sh "$work/certs" >/dev/null
c=$work/certs
head -c 128M /dev/urandom > "$work/src.mem"
devices=(--device gpu0=sim:state=32M,seed=1,dirty=4,churn=1K --device nic0=sim:state=8M,seed=2,dirty=2,churn=512)
ip netns exec "$dst" "$bin" receive --listen 192.0.2.2:7070 \
  --ca "$c/ca.pem" --cert "$c/destination.pem" --key "$c/destination-key.pem" \
  --peer-name source.vfio-migrate.test --accept-timeout 60 \
  --memory "$work/dst.mem" --memory-size 128M --create-memory --dump-state "$work/dst" "${devices[@]}" &
bg_pid=$!
sleep 1
ip netns exec "$src" "$bin" send --connect 192.0.2.2:7070 \
  --ca "$c/ca.pem" --cert "$c/source.pem" --key "$c/source-key.pem" \
  --peer-name destination.vfio-migrate.test \
  --memory "$work/src.mem" --dump-state "$work/src" "${devices[@]}"
wait $bg_pid; bg_pid=
cmp "$work/src.mem" "$work/dst.mem"
for d in gpu0 nic0; do cmp "$work/src/$d.state" "$work/dst/$d.state"; done
echo "two hosts: device state and guest memory identical on both ends"
