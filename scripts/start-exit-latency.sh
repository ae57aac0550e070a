#!/usr/bin/env bash
# Process start -> `connected` and `finished` -> process exit of the sender, over
# 127.0.0.1, for a small guest and a simulated device without a state image: what
# an orchestration tool waits for around the migration proper (issue 14's goal:
# both <= 50 ms). Wall clock before exec and after exit against the events' own
# wall-clock timestamps (docs/EVENTS.md).
#
# Usage: scripts/start-exit-latency.sh [RUNS] [WORKDIR]   (needs a release build:
# swift build -c release; the development certificates in certs/dev)
set -euo pipefail
RUNS=${1:-5}
W=${2:-$(mktemp -d /dev/shm/vfio-migrate-latency.XXXXXX 2>/dev/null || mktemp -d)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/.build/release/vfio-migrate
C=$ROOT/certs/dev
[ -x "$B" ] || { echo "no release build at $B: run swift build -c release" >&2; exit 1; }
trap 'rm -rf "$W"' EXIT
CD=(--ca "$C/ca.pem" --cert "$C/destination.pem" --key "$C/destination-key.pem" --peer-name source.vfio-migrate.test --allow-dev-certs)
CS=(--ca "$C/ca.pem" --cert "$C/source.pem" --key "$C/source-key.pem" --peer-name destination.vfio-migrate.test --allow-dev-certs)
DEV=dev0=sim:state=1048576,seed=1
head -c $((64 << 20)) /dev/urandom > "$W/src.mem"
for i in $(seq "$RUNS"); do
  rm -f "$W/port" "$W/dst.mem"
  "$B" receive --listen 127.0.0.1:0 --port-file "$W/port" --accept-timeout 60 --memory "$W/dst.mem" \
    --memory-size $((64 << 20)) --create-memory --device "$DEV" --json "${CD[@]}" > "$W/r.out" 2> "$W/r.err" &
  receiver=$!
  for _ in $(seq 500); do [ -s "$W/port" ] && break; sleep 0.01; done
  t0=$(date +%s.%N)
  "$B" send --connect "127.0.0.1:$(cat "$W/port")" --memory "$W/src.mem" --device "$DEV" --json "${CS[@]}" > "$W/s.out" 2> "$W/s.err"
  t1=$(date +%s.%N)
  wait "$receiver"
  cmp -s "$W/src.mem" "$W/dst.mem" || { echo "run $i: guest memory differs" >&2; exit 1; }
  python3 - "$t0" "$t1" "$W/s.out" <<'PY'
import json, sys
t0, t1 = float(sys.argv[1]), float(sys.argv[2])
events = {}
for line in open(sys.argv[3]):
    e = json.loads(line)
    events.setdefault(e["event"], e)
def wall(e): return e["timestamp"]["seconds"] + e["timestamp"]["microseconds"] / 1e6
print("start -> connected %.1f ms, finished -> exit %.1f ms" % ((wall(events["connected"]) - t0) * 1e3, (t1 - wall(events["finished"])) * 1e3))
PY
done
