import Foundation
import MigrationTLS
import MigrationWire
import SyncPrimitives

/// Frames out, from any thread (pipeline consumer, keep-alive, session, applier):
/// one encoder under one lock, so sequence numbers stay contiguous whoever writes
/// and frames never interleave. Optional bandwidth limit, which may change while
/// frames flow (`BandwidthLimiter`).
///
/// Version 2 (PROTOCOL.md §13), once `enableResumption` is called: a failed write
/// does not fail the session but marks the link lost (`Link`) and tells the
/// session's `onLoss`. On the source every frame is numbered into the retained
/// window and writers wait while the link is lost (the replay after `reattach`
/// sends what they encoded); on the destination, whose direction is not replayed,
/// frames written while lost are numbered and dropped.
final class FrameWriter: Sendable {
    enum Link: Sendable {
        case attached
        case lost
        case failed(MigrationFailure)
    }
    /// What a lost link does to writers.
    enum LossPolicy: Sendable {
        /// Source: wait for `reattach` (or `abandonResumption`).
        case waitForReplay
        /// Destination: drop the frame; RESUME_ACCEPT's progress stands for it.
        case drop
    }
    private struct State {
        var encoder = FrameEncoder()
        var stream: TLSStream
        var bytesOut: UInt64 = 0
        var lastWrite = ContinuousClock.now
        var link = Link.attached
        var lossPolicy: LossPolicy?
        var onLoss: (@Sendable (TLSStream) -> Void)?
        /// Destination: the furthest of READY and RESUMED this writer has numbered.
        var progressSent = DestinationProgress.receiving
        var isLost: Bool { if case .lost = link { return lossPolicy == .waitForReplay } else { return false } }
    }
    private let state: ConditionValue<State>
    /// The source's retained window, under a lock of its own: an ACK on the reader
    /// thread must never wait behind a write blocked on the network.
    private let retention = ConditionValue(Retention())
    private let limiter: BandwidthLimiter?

    private struct Retention {
        var window: RetainedWindow?
        var failure: MigrationFailure?
    }

    /// `limiter` starts counting now: its average is this session's.
    init(stream: TLSStream, limiter: BandwidthLimiter? = nil) {
        state = ConditionValue(State(stream: stream))
        self.limiter = limiter
        limiter?.restart()
    }

    var stream: TLSStream { state.withLock { $0.stream } }
    var wireBytesSent: UInt64 { state.withLock { $0.bytesOut } }
    var idleSinceLastWrite: Duration { state.withLock { .now - $0.lastWrite } }
    var nextSequence: UInt64 { state.withLock { $0.encoder.nextSequence } }

    /// From now on a failed write loses the link instead of failing the session.
    /// `window` (source) retains every frame from the next sequence on.
    func enableResumption(policy: LossPolicy, window capacity: Int?, deviceCount: Int,
                          onLoss: @escaping @Sendable (TLSStream) -> Void) {
        state.withLock { s in
            s.lossPolicy = policy
            s.onLoss = onLoss
            if let capacity {
                let next = s.encoder.nextSequence
                retention.withLock { $0.window = RetainedWindow(capacity: capacity, deviceCount: deviceCount, nextSequence: next) }
            }
        }
    }

    /// Ends resumption (the session ends): an attached link writes and fails as in
    /// version 1 (so the ABORT still goes out); a lost one fails every waiting writer.
    func abandonResumption(_ failure: MigrationFailure) {
        state.withLock { s in
            s.lossPolicy = nil
            if case .lost = s.link { s.link = .failed(failure) }
        }
        retention.withLock { if $0.failure == nil { $0.failure = failure } }
    }

    func send(_ body: FrameBody, device: UInt32 = 0) throws(MigrationFailure) {
        try send(batch: [(body, device)])
    }

    /// Sends several frames as one write (fewer TLS records and syscalls).
    func send(batch: [(FrameBody, UInt32)]) throws(MigrationFailure) {
        let progress: DestinationProgress? = batch.contains { $0.0 == .resumed } ? .resumed : batch.contains { $0.0 == .ready } ? .ready : nil
        try write(progress: progress) { (encoder: inout FrameEncoder) throws(WireError) in
            var bytes: [UInt8] = []
            for (body, device) in batch {
                let start = bytes.count
                try encoder.encode(body, device: device, appendingTo: &bytes)
                // Numbered means retained, even if the write then fails: the replay covers it.
                retention.withLock { $0.window?.record(body, device: device, encoded: Array(bytes[start...])) }
            }
            return bytes
        }
    }

    /// Destination, version 2: where it stands in the source's stream (§13.3).
    func sendAck(_ position: StreamPosition) throws(MigrationFailure) {
        try write { (encoder: inout FrameEncoder) throws(WireError) in try encoder.encode(.ack(position)) }
    }

    /// Ends a failed session (PROTOCOL.md §5.7, §2.5): ABORT unless the peer's own ABORT
    /// ended it (never answered), then close_notify and a bounded read until the peer
    /// closes, so the ABORT is not lost to a reset; then the socket is closed.
    func endWithAbort(_ failure: MigrationFailure, message: String) {
        abandonResumption(failure)
        let stream = self.stream
        if failure.isPeerAbort || (try? send(.abort(Abort(reason: failure.abortReason, message: message)))) != nil {
            try? stream.shutdown()
        }
        stream.close()
    }

    // MARK: - version 2

    /// Source: waits until a device read of `bytes` fits the retained window (§13.3),
    /// woken by ACK; throws once the session gave up.
    func waitForRoom(_ bytes: Int) throws(MigrationFailure) {
        try retention.wait(until: { $0.failure != nil || ($0.window?.hasRoom(for: bytes) ?? true) }) {
            (r: inout Retention, _) throws(MigrationFailure) in
            if let failure = r.failure { throw failure }
        }
    }

    /// Source: the destination's ACK frees the window below its position.
    func acknowledge(_ position: StreamPosition) throws(MigrationFailure) {
        try retention.withLock { (r: inout Retention) throws(MigrationFailure) in
            do throws(WireError) { try r.window?.acknowledge(position) } catch { throw MigrationFailure(error) }
        }
    }

    /// Marks the link lost (idempotent for the same stream) and closes `stream`, so a
    /// reader or writer blocked on it wakes. Returns false once the session gave up.
    @discardableResult
    func markLost(_ stream: TLSStream) -> Bool {
        let lost = state.withLock { s -> Bool in
            guard s.lossPolicy != nil, s.stream === stream else { return s.lossPolicy != nil }
            if case .attached = s.link { s.link = .lost }
            return true
        }
        stream.close()
        return lost
    }

    /// Source: the new connection is verified and RESUME_ACCEPT read. Sends the
    /// window's replay from `position` on `stream` (`regenerate` builds a PAGES
    /// frame again from a fresh read), then lets waiting writers go on. Returns the
    /// bytes replayed. A wire error: the resume point cannot be served (ABORT);
    /// a TLS error: this connection failed too (the link stays lost).
    func reattach(_ stream: TLSStream, replayingFrom position: StreamPosition,
                  regenerate: (RetainedWindow.ReplayItem, FrameEncoder) throws(MigrationFailure) -> [UInt8]) throws(MigrationFailure) -> UInt64 {
        try state.withLock { (s: inout State) throws(MigrationFailure) -> UInt64 in
            if case .failed(let failure) = s.link { throw failure }
            let items: [RetainedWindow.ReplayItem]
            do throws(WireError) {
                items = try retention.withLock { (r: inout Retention) throws(WireError) in try r.window?.replay(from: position) ?? [] }
            } catch { throw MigrationFailure(error) }
            var replayed: UInt64 = 0
            for item in items {
                let bytes = try regenerate(item, s.encoder)
                do throws(TLSError) { try stream.write(bytes) } catch { throw .tls(error) }
                replayed += UInt64(bytes.count)
            }
            s.stream = stream
            s.link = .attached
            s.bytesOut += replayed
            s.lastWrite = .now
            return replayed
        }
    }

    /// Destination: sends `first(progress, nextSequence)` (RESUME_ACCEPT) on the new
    /// connection and attaches it. `progress` is what this writer has sent so far
    /// (READY, RESUMED), so a frame dropped with the old connection is accounted for.
    func reattach(_ stream: TLSStream, first: (_ sent: DestinationProgress, _ nextSequence: UInt64) throws(MigrationFailure) -> [UInt8]) throws(MigrationFailure) {
        try state.withLock { (s: inout State) throws(MigrationFailure) in
            let bytes = try first(s.progressSent, s.encoder.nextSequence)
            do throws(TLSError) { try stream.write(bytes) } catch { throw .tls(error) }
            s.stream = stream
            s.link = .attached
            s.lastWrite = .now
        }
    }

    private func write(progress: DestinationProgress? = nil,
                       _ encode: (inout FrameEncoder) throws(WireError) -> [UInt8]) throws(MigrationFailure) {
        let lost = try state.wait(until: { !$0.isLost }) { (s: inout State, _) throws(MigrationFailure) -> TLSStream? in
            if case .failed(let failure) = s.link { throw failure }
            let bytes: [UInt8]
            do throws(WireError) { bytes = try encode(&s.encoder) } catch { throw MigrationFailure(error) }
            if let progress, progress > s.progressSent { s.progressSent = progress }
            guard case .attached = s.link else { return nil }  // destination, lost: dropped
            do throws(TLSError) { try s.stream.write(bytes) } catch {
                guard s.lossPolicy != nil else { throw .tls(error) }
                s.link = .lost
                return s.stream
            }
            s.bytesOut += UInt64(bytes.count)
            s.lastWrite = .now
            // Holding the write lock while it sleeps: nothing else may pass.
            limiter?.pace(afterWriting: UInt64(bytes.count))
            return nil
        }
        guard let lost else { return }
        let onLoss = state.withLock { $0.onLoss }
        onLoss?(lost)
        // Source: the frame is in the window; it goes out with the replay.
        try state.wait(until: { !$0.isLost }) { (s: inout State, _) throws(MigrationFailure) in
            if case .failed(let failure) = s.link { throw failure }
        }
    }
}
