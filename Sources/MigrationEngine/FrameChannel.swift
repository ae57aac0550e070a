import Foundation
import MigrationTLS
import MigrationWire

/// One end of a session: frames out through a single locked encoder (so
/// sequence numbers stay contiguous whoever writes), frames in through one
/// decoder on one reader thread. Optional bandwidth limit on the way out.
final class FrameChannel: @unchecked Sendable {
    let stream: TLSStream
    private let writeLock = NSLock()
    private var encoder = FrameEncoder()
    private var decoder: FrameDecoder
    private var bytesOut: UInt64 = 0
    private var bytesIn: UInt64 = 0
    private var lastWrite = ContinuousClock.now
    private let started = ContinuousClock.now
    private let bandwidth: UInt64?
    private let readChunk = 256 << 10

    init(stream: TLSStream, peer: Role, limits: WireLimits, bandwidthBytesPerSecond: UInt64? = nil) {
        self.stream = stream
        self.decoder = FrameDecoder(peer: peer, limits: limits)
        self.bandwidth = bandwidthBytesPerSecond
    }

    var wireBytesSent: UInt64 { writeLock.lock(); defer { writeLock.unlock() }; return bytesOut }
    var wireBytesReceived: UInt64 { bytesIn }  // reader thread only

    /// Announced guest memory and device count, once HELLO is settled.
    func constrainInbound(memory: [MemoryRange], deviceCount: Int) {
        decoder.memory = memory
        decoder.deviceCount = deviceCount
    }

    func send(_ body: FrameBody, device: UInt32 = 0) throws {
        writeLock.lock()
        defer { writeLock.unlock() }
        let bytes = try encoder.encode(body, device: device)
        try stream.write(bytes)
        bytesOut += UInt64(bytes.count)
        lastWrite = .now
        throttle()
    }

    /// Sends several frames as one write (fewer TLS records and syscalls).
    func send(batch: [(FrameBody, UInt32)]) throws {
        writeLock.lock()
        defer { writeLock.unlock() }
        var bytes: [UInt8] = []
        for (body, device) in batch { try encoder.encode(body, device: device, appendingTo: &bytes) }
        try stream.write(bytes)
        bytesOut += UInt64(bytes.count)
        lastWrite = .now
        throttle()
    }

    /// Sleeps (holding the write lock: nothing else may pass) until the average
    /// rate since the start is back under the limit.
    private func throttle() {
        guard let bandwidth, bandwidth > 0 else { return }
        let due = Double(bytesOut) / Double(bandwidth)
        let elapsed = (ContinuousClock.now - started).seconds
        if due > elapsed { Thread.sleep(forTimeInterval: due - elapsed) }
    }

    var idleSinceLastWrite: Duration {
        writeLock.lock(); defer { writeLock.unlock() }
        return .now - lastWrite
    }

    /// The next frame that is not a keep-alive. Throws `.peerClosed` on a clean
    /// close, a TLS error on truncation, a wire error on bad bytes.
    func receive() throws -> Frame {
        while true {
            if let frame = try decoder.next() {
                if case .keepAlive = frame.body { continue }
                return frame
            }
            let bytes = try stream.read(maxCount: readChunk)
            if bytes.isEmpty {
                throw MigrationFailureBox(decoder.bufferedByteCount > 0 ? .unexpectedFrame("stream ended inside a frame") : .peerClosed)
            }
            bytesIn += UInt64(bytes.count)
            decoder.feed(bytes)
        }
    }

    func close() { stream.close() }
}

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

/// Sends a keep-alive frame whenever the channel has been idle (see `KeepAlivePolicy`),
/// so a peer that waits on us (long apply, long device drain) does not time out.
/// Stops by itself once a send fails (the connection is gone).
func startKeepAlive(channel: FrameChannel, peerTimeoutSeconds: Double) -> PeriodicTask {
    let idle = Duration.seconds(KeepAlivePolicy.idleSeconds(peerTimeoutSeconds: peerTimeoutSeconds))
    return PeriodicTask(name: "keepalive", interval: .seconds(KeepAlivePolicy.checkSeconds(peerTimeoutSeconds: peerTimeoutSeconds))) {
        guard channel.idleSinceLastWrite >= idle else { return true }
        return (try? channel.send(.keepAlive)) != nil
    }
}

extension Duration {
    /// As fractional seconds (for rates and displays).
    public var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }
    public var milliseconds: Double { seconds * 1000 }
}
