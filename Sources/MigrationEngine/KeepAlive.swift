/// When to send KEEPALIVE (docs/PROTOCOL.md §7), the same on both ends: after
/// `idleSeconds` without a frame sent, looked at every `checkSeconds`, so no side is
/// ever silent for more than 5 s (`maxSilenceSeconds`). A peer timeout below 30 s
/// shortens it (a sixth of it), so even a side configured that tight sees several
/// keep-alives from a peer with the same setting before it gives up.
enum KeepAlivePolicy {
    static let maxSilenceSeconds = 5.0
    static func idleSeconds(peerTimeoutSeconds: Double) -> Double {
        max(min(4.0, peerTimeoutSeconds / 6), 0.05)
    }
    static func checkSeconds(peerTimeoutSeconds: Double) -> Double { idleSeconds(peerTimeoutSeconds: peerTimeoutSeconds) / 4 }
}

/// Sends a keep-alive frame whenever the writer has been idle (see `KeepAlivePolicy`),
/// so a peer that waits on us (long apply, long device drain) does not time out.
/// Stops by itself once a send fails (the connection is gone).
func startKeepAlive(writer: FrameWriter, peerTimeoutSeconds: Double) -> PeriodicTask {
    let idle = Duration.seconds(KeepAlivePolicy.idleSeconds(peerTimeoutSeconds: peerTimeoutSeconds))
    return PeriodicTask(name: "keepalive", interval: .seconds(KeepAlivePolicy.checkSeconds(peerTimeoutSeconds: peerTimeoutSeconds))) {
        guard writer.idleSinceLastWrite >= idle else { return true }
        return (try? writer.send(.keepAlive)) != nil
    }
}
