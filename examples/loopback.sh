#!/usr/bin/env bash
# Migrates two simulated devices and 64 MiB of guest memory between two
# vfio-migrate processes on 127.0.0.1, then compares device state and memory.
# Usage: examples/loopback.sh   (from the repository root)
# Uses the development certificates of certs/dev, whose private keys are public:
# --allow-dev-certs permits them, on loopback addresses only.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product vfio-migrate >/dev/null
bin=$(swift build -c release --show-bin-path)/vfio-migrate
work=$(mktemp -d)
trap 'kill $rpid 2>/dev/null || true; rm -rf "$work"' EXIT

# Source guest memory: some content so there is something to move.
head -c 64M /dev/urandom > "$work/src.mem"
devices=(--device gpu0=sim:state=16M,seed=1,dirty=4,churn=1K --device nic0=sim:state=4M,seed=2,dirty=2,churn=512)

"$bin" receive --listen 127.0.0.1:0 --port-file "$work/port" \
  --ca certs/dev/ca.pem --cert certs/dev/destination.pem --key certs/dev/destination-key.pem \
  --peer-name source.vfio-migrate.test --allow-dev-certs \
  --memory "$work/dst.mem" --memory-size 64M --create-memory --dump-state "$work/dst" \
  "${devices[@]}" &
rpid=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done

"$bin" send --connect "127.0.0.1:$(cat "$work/port")" \
  --ca certs/dev/ca.pem --cert certs/dev/source.pem --key certs/dev/source-key.pem \
  --peer-name destination.vfio-migrate.test --allow-dev-certs \
  --memory "$work/src.mem" --dump-state "$work/src" "${devices[@]}"
wait $rpid

cmp "$work/src.mem" "$work/dst.mem"
for d in gpu0 nic0; do cmp "$work/src/$d.state" "$work/dst/$d.state"; done
echo "loopback: device state and guest memory identical on both ends"
