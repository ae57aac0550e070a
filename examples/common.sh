# Sourced by the examples (from the repository root).
#
#   example_binary [-c release]   prints the vfio-migrate to run: $VFIO_MIGRATE
#                                 when set (a binary built already), else built now
example_binary() {
  if [ -n "${VFIO_MIGRATE:-}" ]; then echo "$VFIO_MIGRATE"; return; fi
  swift build "$@" --product vfio-migrate >/dev/null
  echo "$(swift build "$@" --show-bin-path)/vfio-migrate"
}

# Two "hosts" on one machine, network namespaces joined
# by a veth pair, 192.0.2.1 <-> 192.0.2.2 (a documentation range that never
# leaves this machine's namespaces), loopback up in each. Needs root.
#   netns_pair SRC DST      make them (veth names from this shell's pid)
#   netns_remove SRC DST    delete them (their veth ends go with them)
netns_pair() {
  ip netns add "$1"
  ip netns add "$2"
  ip link add "vm-s$$" type veth peer name "vm-d$$"
  ip link set "vm-s$$" netns "$1"
  ip link set "vm-d$$" netns "$2"
  ip -n "$1" addr add 192.0.2.1/30 dev "vm-s$$"
  ip -n "$2" addr add 192.0.2.2/30 dev "vm-d$$"
  ip -n "$1" link set "vm-s$$" up
  ip -n "$2" link set "vm-d$$" up
  ip -n "$1" link set lo up
  ip -n "$2" link set lo up
}

netns_remove() {
  ip netns del "$1" 2>/dev/null || true
  ip netns del "$2" 2>/dev/null || true
}

#   two_hosts PREFIX        $work (scratch), namespaces $src and $dst joined as
#                           above; at exit $bg_pid (if set) is killed and all removed
two_hosts() {
  work=$(mktemp -d)
  src=$1-src-$$ dst=$1-dst-$$
  trap '[ -n "${bg_pid:-}" ] && kill "$bg_pid" 2>/dev/null; netns_remove "$src" "$dst"; rm -rf "$work"' EXIT
  netns_pair "$src" "$dst"
}
