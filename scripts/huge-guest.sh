#!/usr/bin/env bash
# Two-process migration of a guest larger than 2^24 pages of 4 KiB (default
# 68 GiB = 17 825 792 pages), on a machine with far less RAM, byte-exact.
#
# Both guests are sparse files on a disk file system: the source has data in a
# few places (around the 2^24-page boundary, at the start and the end, random
# spots) and a simulated device DMA-writes pages while pre-copy runs; the
# destination starts with garbage where the source is zero, so the receiver must
# clear those pages, while it may skip pages that already read as zero (holes).
# The receiver does not populate a disk-backed guest (--populate auto).
#
# Prints time, pages and the peak RssAnon of each process (sampled from
# /proc/PID/status every 0.2 s), then compares the two files extent by extent.
#
# Usage: scripts/huge-guest.sh [SIZE_GIB] [WORKDIR]   (needs a release build:
#        swift build -c release --product vfio-migrate)
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-68}
WORK=${2:-/var/tmp}
BIN=.build/release/vfio-migrate
[ -x "$BIN" ] || { echo "build first: swift build -c release --product vfio-migrate" >&2; exit 1; }
DIR=$(mktemp -d "$WORK/vfio-huge.XXXXXX")
RPID= SPID=
trap 'kill $RPID $SPID 2>/dev/null || true; rm -rf "$DIR"' EXIT
SRC=$DIR/source.ram DST=$DIR/destination.ram
PAGES=$((GIB * 262144))
echo "guest: $GIB GiB = $PAGES pages of 4 KiB (2^24 = 16777216)"

truncate -s "${GIB}G" "$SRC" "$DST"
put() {  # put SOURCE FILE PFN COUNT (skipped past the guest's end, for small comparison runs)
  [ $(($3 + $4)) -le "$PAGES" ] || return 0
  dd if="$1" of="$2" bs=4096 seek="$3" count="$4" conv=notrunc status=none
}
for pfn in 0 1 4095 16777215 16777216 16777217 $((PAGES - 1)); do put /dev/urandom "$SRC" "$pfn" 1; done
put /dev/urandom "$SRC" $((16777216 - 300)) 600                  # a run across the boundary
(yes "vfio-migrate huge guest text page" || true) | head -c $((64 * 4096)) > "$DIR/text"
put "$DIR/text" "$SRC" $((PAGES / 2)) 64
for pfn in 5 16777300 $((PAGES - 2)) 12345678; do put /dev/urandom "$DST" "$pfn" 1; done   # stale data to clear
put /dev/urandom "$DST" 16777215 3                                 # to be overwritten

peak() {  # peak RssAnon (kB) of PID while it lives
  local pid=$1 max=0 v
  while kill -0 "$pid" 2>/dev/null; do
    v=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${v:-0}" -gt "$max" ] && max=$v
    sleep 0.2
  done
  echo "$max"
}

DEV="gpu0=sim:state=16M,dirty=8,chunk=1M"
C=certs/dev   # the development set: loopback only, with --allow-dev-certs
"$BIN" receive --listen 127.0.0.1:0 --port-file "$DIR/port" --memory "$DST" --device "$DEV" \
  --ca $C/ca.pem --cert $C/destination.pem --key $C/destination-key.pem \
  --peer-name source.vfio-migrate.test --allow-dev-certs \
  --json > "$DIR/receive.json" 2> "$DIR/receive.err" &
RPID=$!
for _ in $(seq 100); do [ -s "$DIR/port" ] && break; sleep 0.1; done
PORT=$(cat "$DIR/port")
START=$(date +%s.%N)
"$BIN" send --connect "127.0.0.1:$PORT" --memory "$SRC" --device "$DEV" --workload-ms 5 \
  --ca $C/ca.pem --cert $C/source.pem --key $C/source-key.pem \
  --peer-name destination.vfio-migrate.test --allow-dev-certs \
  --json > "$DIR/send.json" 2> "$DIR/send.err" &
SPID=$!
peak $RPID > "$DIR/rpeak" & peak $SPID > "$DIR/speak" &
wait $SPID; SRC_RC=$?
wait $RPID; DST_RC=$?
wait
END=$(date +%s.%N)
echo "exit codes: source $SRC_RC, destination $DST_RC; wall time $(echo "$END - $START" | bc) s"
python3 - "$DIR/send.json" "$DIR/receive.json" <<'PY'
import json, sys
for path in sys.argv[1:]:
    for line in open(path):
        e = json.loads(line)
        if e.get("event") != "finished": continue
        s = e["stats"]
        print(f"{s['role']}: {s['totalSeconds']:.1f} s, iterations {s['iterations']}, pages {s['pagesSent']} ({s['zeroPages']} zero), "
              f"raw {s['rawBytes'] / 2**30:.1f} GiB, wire {s['wireBytes'] / 2**20:.1f} MiB, "
              f"bitmaps none/all/partial {s['bitmapsNone']}/{s['bitmapsAll']}/{s['bitmapsPartial']}, downtime {s['downtimeMs']:.0f} ms")
PY
echo "peak RssAnon: source $(( $(cat "$DIR/speak") / 1024 )) MiB, destination $(( $(cat "$DIR/rpeak") / 1024 )) MiB"
echo "disk used: source $(du -h "$SRC" | cut -f1), destination $(du -h "$DST" | cut -f1)"

# Byte-exact: every data extent of either file is compared; holes on both sides are zero on both.
python3 - "$SRC" "$DST" <<'PY'
import os, sys
a, b = (open(p, "rb") for p in sys.argv[1:3])
size = os.fstat(a.fileno()).st_size
assert size == os.fstat(b.fileno()).st_size, "sizes differ"
def extents(f):
    out, off = [], 0
    while off < size:
        try: start = os.lseek(f.fileno(), off, os.SEEK_DATA)
        except OSError: break
        end = os.lseek(f.fileno(), start, os.SEEK_HOLE)
        out.append((start, end)); off = end
    return out
ranges = sorted(extents(a) + extents(b))
compared, pos = 0, 0
for start, end in ranges:
    start = max(start, pos)
    while start < end:
        n = min(end - start, 8 << 20)
        if os.pread(a.fileno(), n, start) != os.pread(b.fileno(), n, start):
            sys.exit(f"MISMATCH in [{start}, {start + n})")
        compared += n; start += n
    pos = max(pos, end)
print(f"byte-exact: {len(ranges)} data extents, {compared / 2**20:.1f} MiB compared, the rest is a hole in both files")
PY
[ "$SRC_RC" = 0 ] && [ "$DST_RC" = 0 ]
