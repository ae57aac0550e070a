import Foundation
import MigrationTLS
import MigrationWire
import SyncPrimitives

/// Frames out, from any thread (pipeline consumer, keep-alive, session, applier):
/// one encoder under one lock, so sequence numbers stay contiguous whoever writes
/// and frames never interleave. Optional bandwidth limit, which may change while
/// frames flow (`BandwidthLimiter`).
final class FrameWriter: Sendable {
    let stream: TLSStream
    private struct State {
        var encoder = FrameEncoder()
        var bytesOut: UInt64 = 0
        var lastWrite = ContinuousClock.now
    }
    private let state = LockedValue(State())
    private let limiter: BandwidthLimiter?

    /// `limiter` starts counting now: its average is this session's.
    init(stream: TLSStream, limiter: BandwidthLimiter? = nil) {
        self.stream = stream
        self.limiter = limiter
        limiter?.restart()
    }

    var wireBytesSent: UInt64 { state.withLock { $0.bytesOut } }
    var idleSinceLastWrite: Duration { state.withLock { .now - $0.lastWrite } }

    func send(_ body: FrameBody, device: UInt32 = 0) throws(MigrationFailure) {
        try write { (encoder: inout FrameEncoder) throws(WireError) in try encoder.encode(body, device: device) }
    }

    /// Sends several frames as one write (fewer TLS records and syscalls).
    func send(batch: [(FrameBody, UInt32)]) throws(MigrationFailure) {
        try write { (encoder: inout FrameEncoder) throws(WireError) in
            var bytes: [UInt8] = []
            for (body, device) in batch { try encoder.encode(body, device: device, appendingTo: &bytes) }
            return bytes
        }
    }

    /// Ends a failed session (PROTOCOL.md §5.7, §2.5): ABORT unless the peer's own ABORT
    /// ended it (never answered), then close_notify and a bounded read until the peer
    /// closes, so the ABORT is not lost to a reset; then the socket is closed.
    func endWithAbort(_ failure: MigrationFailure, message: String) {
        if failure.isPeerAbort || (try? send(.abort(Abort(reason: failure.abortReason, message: message)))) != nil {
            try? stream.shutdown()
        }
        stream.close()
    }

    private func write(_ encode: (inout FrameEncoder) throws(WireError) -> [UInt8]) throws(MigrationFailure) {
        try state.withLock { (s: inout State) throws(MigrationFailure) in
            let bytes: [UInt8]
            do throws(WireError) { bytes = try encode(&s.encoder) } catch { throw MigrationFailure(error) }
            do throws(TLSError) { try stream.write(bytes) } catch { throw .tls(error) }
            s.bytesOut += UInt64(bytes.count)
            s.lastWrite = .now
            // Holding the write lock while it sleeps: nothing else may pass.
            limiter?.pace(afterWriting: UInt64(bytes.count))
        }
    }
}
