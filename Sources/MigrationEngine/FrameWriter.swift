import Foundation
import MigrationTLS
import MigrationWire
import SyncPrimitives
import VFIODevice

/// Frames out, from any thread (pipeline consumer, keep-alive, session, applier):
/// one encoder under one lock, so sequence numbers stay contiguous whoever writes
/// and frames never interleave. Optional bandwidth limit, which may change while
/// frames flow (`BandwidthLimiter`).
///
/// Version 2 (PROTOCOL.md §13), once `enableResumption` is called: a failed write
/// does not fail the session but marks the link lost and closes the stream (the
/// session's reader wakes and reconnects). On the source every frame is numbered
/// into the retained window and writers wait while the link is lost (the replay
/// after `reattach` sends what they encoded); on the destination, whose direction
/// is not replayed, frames written while lost are numbered and dropped.
///
/// Three locks, always taken in this order: `output` (encoder and the write
/// itself, held while a write blocks), `link`, `retention`. Nothing that must not
/// wait for a blocked write (an ACK, giving up, the current stream) takes `output`.
final class FrameWriter: Sendable {
    /// What a lost link does to writers.
    enum LossPolicy: Sendable {
        /// Source: wait for `reattach` (or `abandonResumption`).
        case waitForReplay
        /// Destination: drop the frame; RESUME_ACCEPT's progress stands for it.
        case drop
    }
    private enum Status: Sendable {
        case attached
        case lost
        case failed(MigrationFailure)
    }
    private struct Link {
        var stream: TLSStream
        var status = Status.attached
        /// nil: version 1 (or resumption abandoned): a failed write fails the session.
        var lossPolicy: LossPolicy?
        /// Called once each time the link goes from attached to lost (version 3: an
        /// extra stream's loss suspends the whole session, §14.5).
        var onLost: (@Sendable () -> Void)?
        var writersWait: Bool { if case .lost = status { return lossPolicy == .waitForReplay } else { return false } }
    }
    private struct Output {
        var encoder = FrameEncoder()
        var bytesOut: UInt64 = 0
        var lastWrite = ContinuousClock.now
        /// Destination: the furthest of READY and RESUMED this writer has numbered.
        var progressSent = DestinationProgress.receiving
    }
    private struct Retention {
        var window: WindowBudget?
        var failure: MigrationFailure?
    }
    private enum Outcome {
        case written
        case retry
        case lost(TLSStream, TLSError)
    }
    private let output = LockedValue(Output())
    private let link: ConditionValue<Link>
    /// The source's retained window: an ACK on the reader thread never waits for a write.
    private let retention = ConditionValue(Retention())
    private let limiter: BandwidthLimiter?
    /// Source, version 6: what this stream's destination holds for page copies (§17).
    private let pageCopies = LockedValue<PageCopyTable?>(nil)

    /// `limiter` starts counting now: its average is this session's.
    init(stream: TLSStream, limiter: BandwidthLimiter? = nil) {
        link = ConditionValue(Link(stream: stream))
        self.limiter = limiter
        limiter?.restart()
    }

    /// The connection frames go to now.
    var stream: TLSStream { link.withLock { $0.stream } }
    var wireBytesSent: UInt64 { output.withLock { $0.bytesOut } }
    var idleSinceLastWrite: Duration { output.withLock { .now - $0.lastWrite } }
    var nextSequence: UInt64 { output.withLock { $0.encoder.nextSequence } }

    /// From now on a failed write loses the link instead of failing the session.
    /// With `window` (source) every frame from the next sequence on is retained.
    func enableResumption(policy: LossPolicy, window capacity: Int?, deviceCount: Int, onLost: (@Sendable () -> Void)? = nil) {
        output.withLock { o in
            link.withLock { $0.lossPolicy = policy; $0.onLost = onLost }
            if let capacity {
                let window = RetainedWindow(capacity: capacity, deviceCount: deviceCount, nextSequence: o.encoder.nextSequence)
                retention.withLock { $0.window = WindowBudget(window) }
            }
        }
    }

    /// Source, version 6: pages this writer numbers are remembered by `table` once
    /// acknowledged, and forgotten unacknowledged when the link is replayed.
    func enablePageCopies(_ table: PageCopyTable) { pageCopies.withLock { $0 = table } }

    /// Ends resumption (the session ends): an attached link writes and fails as in
    /// version 1 (so the ABORT still goes out); a lost one fails every waiting writer.
    func abandonResumption(_ failure: MigrationFailure) {
        link.withLock { l in
            l.lossPolicy = nil
            if case .lost = l.status { l.status = .failed(failure) }
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
                // PAGES and KEEPALIVE keep no bytes (the window reads only their header);
                // PAGES with a zstd lane segment keep all of theirs (§15.4).
                let end: Int = switch body {
                case .pages(let p) where !p.hasLaneSegments: start + FrameDecoder.headerSize
                case .keepAlive: start + FrameDecoder.headerSize
                default: bytes.count
                }
                retention.withLock { $0.window?.record(body, device: device, encoded: Array(bytes[start..<end])) }
            }
            return bytes
        }
    }

    /// Source, version 3: the last frame of extra stream `index` (§14.4); its frame
    /// count is its own sequence number, read under the write lock. `numbered` runs
    /// as soon as it is numbered, before the write.
    func sendStreamEnd(index: Int, numbered: () -> Void) throws(MigrationFailure) {
        try write { (encoder: inout FrameEncoder) throws(WireError) in
            let bytes = try encoder.encode(.streamEnd(StreamEnd(streamIndex: UInt32(index), frameCount: encoder.nextSequence)))
            numbered()
            // Retained like any control frame: a resume before the destination applied it sends it again.
            retention.withLock { $0.window?.record(encoded: bytes) }
            return bytes
        }
    }

    /// Sends a frame a worker serialised whole (`FrameEncoder.prepare`, a PAGES
    /// frame built in place): numbering patches its header in place, so the bytes
    /// go to TLS without another copy when the caller owns the only reference.
    /// Raw pages the frame borrowed (`PreparedFrame.borrowed`) are sent from `memory`'s
    /// mapping, each in its place: one copy fewer than through the frame.
    /// `sent`: the pages the frame sent with their bytes, and its batch's generation
    /// (page copies, §17), handed to the table with the frame's number.
    func send(prepared frame: inout PreparedFrame, memory: GuestMemory? = nil,
              sent: (generation: UInt64, pages: [SentPage])? = nil) throws(MigrationFailure) {
        precondition(frame.borrowed.isEmpty || memory != nil, "borrowed pages need the guest memory")
        let table = sent == nil ? nil : pageCopies.withLock { $0 }
        try writeFrame { (encoder: inout FrameEncoder) throws(WireError) in
            encoder.number(&frame)
            if let table, let sent { table.pend(sequence: encoder.nextSequence - 1, generation: sent.generation, sent: sent.pages) }
            retention.withLock { $0.window?.record(frame.body, device: frame.device, encoded: frame.retainedBytes) }
            return Outgoing(bytes: frame.bytes, borrowed: frame.borrowed, memory: memory)
        }
    }

    /// Destination, version 2: where it stands in the source's stream (§13.3).
    func sendAck(_ position: StreamPosition) throws(MigrationFailure) {
        try write { (encoder: inout FrameEncoder) throws(WireError) in try encoder.encode(.ack(position)) }
    }

    /// Ends a failed session (PROTOCOL.md §5.7, §2.5): ABORT unless the peer's own ABORT
    /// ended it (never answered), then close_notify and a bounded read until the peer
    /// closes, so the ABORT is not lost to a reset; then the socket is closed.
    /// Returns whether our ABORT went out (false also when the peer's ended it).
    @discardableResult
    func endWithAbort(_ failure: MigrationFailure, message: String) -> Bool {
        abandonResumption(failure)
        let stream = self.stream
        let sent = !failure.isPeerAbort && (try? send(.abort(Abort(reason: failure.abortReason, message: message)))) != nil
        if sent || failure.isPeerAbort { try? stream.shutdown() }
        stream.close()
        return sent
    }

    // MARK: - version 2

    /// Source: waits until a device read of a frame of up to `bytes` encoded bytes fits
    /// the retained window (§13.3), woken by ACK, and reserves that room until the
    /// frame is numbered; throws once the session gave up.
    func waitForRoom(_ bytes: Int) throws(MigrationFailure) {
        try retention.wait(until: { $0.failure != nil || ($0.window?.hasRoom(for: bytes) ?? true) }) {
            (r: inout Retention, _) throws(MigrationFailure) in
            if let failure = r.failure { throw failure }
            r.window?.reserve(bytes)
        }
    }

    /// Source, version 4: waits until the frames retained leave room for a lane frame of
    /// `bytes` (kept as its bytes, §15.4). Device reads' reservations do not count: they
    /// may be for frames behind this one in the pipeline, which only it lets through.
    func waitForRetainedRoom(_ bytes: Int) throws(MigrationFailure) {
        try waitUntil { $0.window.hasRoom(for: bytes) }
    }

    /// Source, an extra stream (§14.5): waits until the window has room for one more
    /// frame's bookkeeping (its PAGES keep no bytes, but each is charged its entry), so
    /// what the stream retains stays within its window; throws once the session gave up.
    /// Nothing is reserved: no device data is read for an extra stream.
    func waitForEntryRoom() throws(MigrationFailure) {
        try waitUntil { $0.hasRoom(for: RetainedWindow.entryCost) }
    }

    /// Waits, reserving nothing, until the window says `roomy` (or there is none);
    /// throws once the session gave up.
    private func waitUntil(_ roomy: (WindowBudget) -> Bool) throws(MigrationFailure) {
        try retention.wait(until: { r in r.failure != nil || (r.window.map(roomy) ?? true) }) {
            (r: inout Retention, _) throws(MigrationFailure) in
            if let failure = r.failure { throw failure }
        }
    }

    /// Source: the destination's ACK frees the window below its position.
    func acknowledge(_ position: StreamPosition) throws(MigrationFailure) {
        try retention.withLock { (r: inout Retention) throws(MigrationFailure) in
            do throws(WireError) { try r.window?.acknowledge(position) } catch { throw MigrationFailure(error) }
        }
        pageCopies.withLock { $0 }?.acknowledge(nextSequence: position.nextSequence)
    }

    /// Marks the link lost if `stream` is still the current one, and closes `stream`,
    /// so a reader or writer blocked on it wakes. Returns false in version 1 or once
    /// the session gave up resuming.
    @discardableResult
    func markLost(_ stream: TLSStream) -> Bool {
        let (resumable, hook) = link.withLock { l -> (Bool, (@Sendable () -> Void)?) in
            guard l.lossPolicy != nil else { return (false, nil) }
            guard l.stream === stream, case .attached = l.status else { return (true, nil) }
            l.status = .lost
            return (true, l.onLost)
        }
        stream.close()
        hook?()
        return resumable
    }

    /// Source: the new connection is verified and RESUME_ACCEPT read. Sends the
    /// window's replay from `position` on `stream` (`regenerate` builds a PAGES
    /// frame again from a fresh read), then lets waiting writers go on. Returns the
    /// bytes replayed. A wire error: the resume point cannot be served (ABORT);
    /// a TLS error: this connection failed too (the link stays lost).
    func reattach(_ stream: TLSStream, replayingFrom position: StreamPosition,
                  regenerate: (RetainedWindow.ReplayItem, FrameEncoder) throws(MigrationFailure) -> [UInt8]) throws(MigrationFailure) -> UInt64 {
        try output.withLock { (o: inout Output) throws(MigrationFailure) -> UInt64 in
            if case .failed(let failure) = link.withLock({ $0.status }) { throw failure }
            // No frame is numbered while lost: what is pending now is all the replay may build again.
            pageCopies.withLock { $0 }?.forgetPending()
            let items: [RetainedWindow.ReplayItem]
            do throws(WireError) {
                items = try retention.withLock { (r: inout Retention) throws(WireError) in try r.window?.replay(from: position) ?? [] }
            } catch { throw MigrationFailure(error) }
            var replayed: UInt64 = 0
            for item in items {
                let bytes = try regenerate(item, o.encoder)
                do throws(TLSError) { try stream.write(bytes) } catch { throw .tls(error) }
                replayed += UInt64(bytes.count)
            }
            o.bytesOut += replayed
            o.lastWrite = .now
            try attach(stream)
            return replayed
        }
    }

    /// Destination: sends `first(progress, nextSequence)` (RESUME_ACCEPT) on the new
    /// connection and attaches it. `progress` is what this writer has numbered so far
    /// (READY, RESUMED), so a frame dropped with the old connection is accounted for.
    func reattach(_ stream: TLSStream, first: (_ sent: DestinationProgress, _ nextSequence: UInt64) throws(MigrationFailure) -> [UInt8]) throws(MigrationFailure) {
        try output.withLock { (o: inout Output) throws(MigrationFailure) in
            let bytes = try first(o.progressSent, o.encoder.nextSequence)
            do throws(TLSError) { try stream.write(bytes) } catch { throw .tls(error) }
            o.lastWrite = .now
            try attach(stream)
        }
    }

    /// With `output` held, so no writer slips in between the replay and the switch.
    private func attach(_ stream: TLSStream) throws(MigrationFailure) {
        try link.withLock { (l: inout Link) throws(MigrationFailure) in
            if case .failed(let failure) = l.status { throw failure }
            l.stream = stream
            l.status = .attached
        }
    }

    /// A frame's bytes, and the guest pages it sends from their mapping in between.
    private struct Outgoing {
        var bytes: [UInt8]
        var borrowed: [BorrowedPages] = []
        var memory: GuestMemory?

        var byteCount: Int { borrowed.reduce(bytes.count) { $0 + $1.byteCount } }

        /// The pieces in order, the write buffer flushed once, after the last.
        func write(to stream: TLSStream) throws(MigrationFailure) {
            guard let memory, !borrowed.isEmpty else {
                do throws(TLSError) { try stream.write(bytes) } catch { throw .tls(error) }
                return
            }
            var cursor = 0
            for run in borrowed {
                let before = bytes[cursor..<run.offset]
                do throws(TLSError) { try stream.write(before.span.bytes, flush: false) } catch { throw .tls(error) }
                let sent = try deviceCall(nil) { () throws(DeviceError) in
                    try memory.withPages(startPFN: run.startPFN, count: Int(run.pageCount)) { (pages: RawSpan) throws(TLSError) in
                        try stream.write(pages, flush: false)
                    }
                }
                do throws(TLSError) { try sent.get() } catch { throw .tls(error) }
                cursor = run.offset
            }
            let rest = bytes[cursor...]
            do throws(TLSError) { try stream.write(rest.span.bytes, flush: true) } catch { throw .tls(error) }
        }
    }

    private func write(progress: DestinationProgress? = nil,
                       _ encode: (inout FrameEncoder) throws(WireError) -> [UInt8]) throws(MigrationFailure) {
        try writeFrame(progress: progress) { (encoder: inout FrameEncoder) throws(WireError) in Outgoing(bytes: try encode(&encoder)) }
    }

    private func writeFrame(progress: DestinationProgress? = nil,
                            _ encode: (inout FrameEncoder) throws(WireError) -> Outgoing) throws(MigrationFailure) {
        while true {
            try waitWhileLost()
            switch try attempt(progress: progress, encode) {
            case .written: return
            case .retry: continue
            case .lost(let stream, let error):
                guard markLost(stream) else { throw .tls(error) }
                // Source: the frame is in the window; it goes out with the replay.
                try waitWhileLost()
                return
            }
        }
    }

    /// One encode and write with `output` held; the link is looked at again under it.
    private func attempt(progress: DestinationProgress?, _ encode: (inout FrameEncoder) throws(WireError) -> Outgoing) throws(MigrationFailure) -> Outcome {
        try output.withLock { (o: inout Output) throws(MigrationFailure) -> Outcome in
            let (stream, status, waits) = link.withLock { ($0.stream, $0.status, $0.writersWait) }
            if case .failed(let failure) = status { throw failure }
            if waits { return .retry }
            let frame: Outgoing
            do throws(WireError) { frame = try encode(&o.encoder) } catch { throw MigrationFailure(error) }
            if let progress, progress > o.progressSent { o.progressSent = progress }
            guard case .attached = status else { return .written }  // destination, lost: dropped
            do throws(MigrationFailure) { try frame.write(to: stream) } catch {
                guard case .tls(let tlsError) = error else { throw error }
                return .lost(stream, tlsError)
            }
            let count = UInt64(frame.byteCount)
            o.bytesOut += count
            o.lastWrite = .now
            // Holding the write lock while it sleeps: nothing else may pass.
            limiter?.pace(afterWriting: count)
            return .written
        }
    }

    private func waitWhileLost() throws(MigrationFailure) {
        try link.wait(until: { !$0.writersWait }) { (l: inout Link, _) throws(MigrationFailure) in
            if case .failed(let failure) = l.status { throw failure }
        }
    }
}
