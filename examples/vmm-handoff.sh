#!/usr/bin/env bash
# A VMM hands a running guest to vfio-migrate, between two "hosts": network
# namespaces joined by a veth pair (192.0.2.1 <-> 192.0.2.2), as in
# examples/two-hosts-netns.sh. On each side examples/toy_vmm.py plays the VMM:
#   - it owns the guest RAM (a memfd) and spawns the transport with it inherited
#     (--memory fd:N, mapped MAP_SHARED: no copy of the guest is made);
#   - it connects to the control socket, hands over its dirty-log bitmap memfd
#     with SCM_RIGHTS (dirty-log-setup) and says `start` (--await-start: the
#     transport opens nothing before);
#   - the source's "vCPU" keeps writing guest memory during pre-copy and
#     answers each dirty-sync with the pages it wrote (--guest-dirty-log), pauses
#     on stop-guest and answers guest-stopped (--guest-handshake);
#   - the destination's VMM is told start-guest after COMMIT.
# The devices are the simulated driver (no VFIO hardware here); a VMM with a
# real device would pass it the same way, --device gpu0=fd:N (or fd:NAME with
# add-fd). At the end the guest memory and device state are compared.
# Needs root (ip netns) and python3. Cleans up after itself.
# Usage: sudo examples/vmm-handoff.sh      (from the repository root)
#   VFIO_MIGRATE=path/to/vfio-migrate to use a built binary (default: swift build).
set -euo pipefail
cd "$(dirname "$0")/.."
. examples/common.sh
[ "$(id -u)" -eq 0 ] || { echo "needs root (ip netns)"; exit 1; }
bin=$(example_binary)
two_hosts vmm

# 192.0.2.x is not loopback: a throwaway certificate set (keys never leave $work).
certs/make-dev-certs.sh "$work/certs" >/dev/null 2>&1
c=$work/certs
mib=16
devices=(--device gpu0=sim:state=4M,seed=1,dirty=4,churn=1K --device nic0=sim:state=1M,seed=2,dirty=2,churn=512)
common=(--memory "fd:{memfd}" --memory-size ${mib}M --await-start --guest-handshake --json --log-level error "${devices[@]}")

python3 examples/toy_vmm.py dst "$work/dst.sock" "$work/dst.mem" $mib -- \
  ip netns exec "$dst" "$bin" receive --listen 192.0.2.2:7070 --accept-timeout 60 \
    --ca "$c/ca.pem" --cert "$c/destination.pem" --key "$c/destination-key.pem" --peer-name source.vfio-migrate.test \
    --control "unix:$work/dst.sock" --dump-state "$work/dst" "${common[@]}" > "$work/dst.log" &
bg_pid=$!
# The destination listens once its VMM said start.
for _ in $(seq 200); do grep -q '"phase":"connect"' "$work/dst.log" 2>/dev/null && break; sleep 0.05; done

python3 examples/toy_vmm.py src "$work/src.sock" "$work/src.mem" $mib -- \
  ip netns exec "$src" "$bin" send --connect 192.0.2.2:7070 \
    --ca "$c/ca.pem" --cert "$c/source.pem" --key "$c/source-key.pem" --peer-name destination.vfio-migrate.test \
    --control "unix:$work/src.sock" --guest-dirty-log --bandwidth 40M --dump-state "$work/src" "${common[@]}" > "$work/src.log"
wait "$bg_pid"; bg_pid=

grep '^vmm:' "$work/src.log" | sed 's/^/source /'
grep '^vmm:' "$work/dst.log" | sed 's/^/destination /'
grep '"event":"finished"' "$work/src.log" | python3 -c 'import json,sys; s=json.load(sys.stdin)["stats"]; print("source: %d pre-copy iteration(s), downtime %.0f ms, %d pages sent" % (s["iterations"], s["downtimeMs"], s["pagesSent"]))'
cmp "$work/src.mem" "$work/dst.mem"
for d in gpu0 nic0; do cmp "$work/src/$d.state" "$work/dst/$d.state"; done
echo "vmm handoff: guest memory (written by the guest during pre-copy) and device state identical on both ends"
