#!/usr/bin/env bash
# Session resumption over a real link (issue 16): two network namespaces joined by
# a veth pair (rate-limited with tc tbf so pre-copy lasts), a two-process
# migration, and the source's end of the link taken down for OUTAGE seconds in
# the middle of pre-copy (`ip link set … down`, then `up`). With the default
# --reconnect-timeout the migration must complete with exit 0 on both sides and
# byte-identical guest memory and device state.
#
# Runs the same migration once without the outage first, and prints the transfer
# time the outage cost next to the outage itself, the resume events of both
# sides, and the peak RssAnon of each process (sampled every 0.2 s).
#
# Development certificates are refused off loopback, so a throwaway CA and two
# leaf certificates (IP SANs of the veth addresses) are made in the work directory.
#
# Usage: sudo scripts/resume-link-down.sh [OUTAGE_S] [GUEST_MIB] [RATE]
#        (default 5 s, 192 MiB, 200mbit; BIN=path/to/vfio-migrate, default the release build;
#        GPU_STATE=SIZE the first device's state, default 8M; SEND_ARGS="…" more send options,
#        e.g. "--resume-window 64M")
set -euo pipefail
cd "$(dirname "$0")/.."
OUTAGE=${1:-5}
MIB=${2:-192}
RATE=${3:-200mbit}
BIN=$(realpath "${BIN:-.build/release/vfio-migrate}")
[ -x "$BIN" ] || { echo "build first: swift build -c release --product vfio-migrate (or set BIN)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (ip netns)" >&2; exit 1; }
TAG=vfres$$
NS_S=$TAG-src NS_D=$TAG-dst
A_S=10.199.$(( $$ % 250 )).1 A_D=10.199.$(( $$ % 250 )).2 PORT=7710
DIR=$(mktemp -d /var/tmp/vfio-resume.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  ip netns del "$NS_S" 2>/dev/null || true
  ip netns del "$NS_D" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

# --- certificates -------------------------------------------------------------
( cd "$DIR"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca-key.pem 2>/dev/null
  openssl req -x509 -new -key ca-key.pem -sha256 -days 2 -subj "/CN=resume test CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign -out ca.pem
  for side in source:$A_S destination:$A_D; do
    name=${side%%:*} ip=${side#*:}
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name-key.pem" 2>/dev/null
    chmod 600 "$name-key.pem"
    openssl req -new -key "$name-key.pem" -subj "/CN=$name" -out "$name.csr"
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:%s\n' "$ip" > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 -sha256 -extfile "$name.ext" -out "$name.pem" 2>/dev/null
  done )
tls() { echo --ca "$DIR/ca.pem" --cert "$DIR/$1.pem" --key "$DIR/$1-key.pem" --peer-name "$2"; }

# --- the link -------------------------------------------------------------------
ip netns add "$NS_S"; ip netns add "$NS_D"
ip link add "$TAG-s" type veth peer name "$TAG-d"
ip link set "$TAG-s" netns "$NS_S"; ip link set "$TAG-d" netns "$NS_D"
ip -n "$NS_S" addr add "$A_S/24" dev "$TAG-s"; ip -n "$NS_D" addr add "$A_D/24" dev "$TAG-d"
for ns in "$NS_S" "$NS_D"; do ip -n "$ns" link set lo up; done
ip -n "$NS_S" link set "$TAG-s" up; ip -n "$NS_D" link set "$TAG-d" up
ip netns exec "$NS_S" tc qdisc add dev "$TAG-s" root tbf rate "$RATE" burst 64kb latency 50ms

head -c $((MIB << 20)) /dev/urandom > "$DIR/src.mem"
DEVICES=(--device "gpu0=sim:state=${GPU_STATE:-8M},seed=1,dirty=64,churn=16K,chunk=1M" --device "nic0=sim:state=2M,seed=2,dirty=16,churn=4K,chunk=256K")

peak_rss() {  # peak_rss PID FILE: the highest RssAnon (kB) while PID lives
  local max=0 v
  while kill -0 "$1" 2>/dev/null; do
    v=$(awk '/RssAnon/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0)
    [ "${v:-0}" -gt "$max" ] && max=$v
    sleep 0.2
  done
  echo "$max" > "$2"
}

# run LABEL OUTAGE: one migration; prints its wall time
run() {
  local label=$1 outage=$2 out=$DIR/$1
  mkdir -p "$out"
  rm -f "$DIR/dst.mem"
  ip netns exec "$NS_D" "$BIN" receive --listen "$A_D:$PORT" --memory "$DIR/dst.mem" --memory-size "${MIB}M" --create-memory \
    "${DEVICES[@]}" $(tls destination "$A_S") --peer-timeout 3 --json --dump-state "$out/dst" > "$out/r.json" 2> "$out/r.err" &
  local rpid=$!; PIDS+=("$rpid")
  peak_rss "$rpid" "$out/r.rss" & PIDS+=($!)
  sleep 1
  local start=$(date +%s.%N)
  ip netns exec "$NS_S" "$BIN" send --connect "$A_D:$PORT" --memory "$DIR/src.mem" "${DEVICES[@]}" $(tls source "$A_D") \
    --peer-timeout 3 --max-iterations 4 ${SEND_ARGS:-} --json --dump-state "$out/src" > "$out/s.json" 2> "$out/s.err" &
  local spid=$!; PIDS+=("$spid")
  peak_rss "$spid" "$out/s.rss" & PIDS+=($!)
  if [ "$outage" -gt 0 ]; then
    sleep 4
    echo "  $(date +%T.%N | cut -c1-12) link $TAG-s down for $outage s"
    ip -n "$NS_S" link set "$TAG-s" down
    sleep "$outage"
    ip -n "$NS_S" link set "$TAG-s" up
    ip netns exec "$NS_S" tc qdisc replace dev "$TAG-s" root tbf rate "$RATE" burst 64kb latency 50ms
    echo "  $(date +%T.%N | cut -c1-12) link up"
  fi
  local sc=0 rc=0
  wait "$spid" || sc=$?
  wait "$rpid" || rc=$?
  local took=$(echo "$(date +%s.%N) - $start" | bc)
  sleep 0.5
  echo "  $label: source exit $sc, destination exit $rc, $(printf %.1f "$took") s; peak RssAnon source $(cat "$out/s.rss") kB, destination $(cat "$out/r.rss") kB"
  cmp -s "$DIR/src.mem" "$DIR/dst.mem" && echo "  guest memory byte-identical" || echo "  GUEST MEMORY DIFFERS"
  for d in gpu0 nic0; do cmp -s "$out/src/$d.state" "$out/dst/$d.state" && echo "  $d state byte-identical" || echo "  $d STATE DIFFERS"; done
  grep -hE '"event":"(connection-lost|reconnecting|resumed|failed)"' "$out/s.json" "$out/r.json" | cut -c1-220 | sed 's/^/    /' || true
  echo "$took" > "$out/took"
  [ "$sc" = 0 ] && [ "$rc" = 0 ]
}

echo "guest ${MIB} MiB + ${GPU_STATE:-8M} + 2M device state over a $RATE veth; outage ${OUTAGE} s"
run baseline 0
run outage "$OUTAGE"
echo "transfer time lost to a ${OUTAGE} s outage: $(printf %.1f "$(echo "$(cat "$DIR/outage/took") - $(cat "$DIR/baseline/took")" | bc)") s"
