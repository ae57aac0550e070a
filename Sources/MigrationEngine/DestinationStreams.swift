import Foundation
import MigrationTLS
import MigrationWire
import SyncPrimitives
import VFIODevice

/// Version 3 (PROTOCOL.md §14), destination: the session's extra streams. The
/// `ResumeAcceptor` verifies each JOIN and `claim`s its index here (each index once);
/// `attach` then gives the stream a reader thread with its own decoder (joined mode:
/// only PAGES of the PFNs it owns), decode workers and page applier.
///
/// Several appliers write guest memory at once, one per stream: that is safe because
/// the PFN sets are disjoint (`StreamRouting`, which each stream's decoder enforces),
/// so no two threads ever write the same page; the shared progress is a `LockedValue`.
///
/// Resumption (§14.5): a lost connection (any stream's) `suspend`s every extra stream:
/// each is closed and its reader drains its pipeline (every frame decoded is applied),
/// so the positions it returns are final and nothing old is applied after them. After
/// `reopen` each stream the source still needs joins again and goes on at its position.
final class DestinationStreams: Sendable {
    /// What every stream's reader and applier need from the session.
    struct Context: Sendable {
        let routing: StreamRouting
        let source: Hello
        let limits: WireLimits
        let workers: Int
        /// Per extra stream (index k at k − 1): its page decoder for the whole session.
        let pageDecoders: [PageDecoderSlot]
        let peerTimeoutSeconds: Double
        let devices: [DestinationDevice]
        let memory: GuestMemory?
        let writer: FrameWriter
        let events: EventSink
        let progress: LockedValue<ApplyProgress>
        let state: LockedValue<DestinationSession.State>
    }
    enum Claim: Equatable {
        /// The index is the JOIN's until the session is next suspended (`epoch`).
        case accepted(epoch: Int)
        case refused(String)
    }
    private struct State {
        var joined: Set<Int> = []
        var ended: Set<Int> = []
        var streams: [Int: TLSStream] = [:]
        var failure: MigrationFailure?
        /// An extra connection was lost (drained): the session resumes (§14.5).
        var lost: MigrationFailure?
        /// Stream k's next sequence at k − 1: every frame below it is applied or will be.
        var positions: [UInt64]
        var readers = 0
        var wireBytes: UInt64 = 0
        var stopped = false
        /// Between a loss and the RESUME_ACCEPT: no stream joins.
        var suspended = false
        /// Suspensions so far: a JOIN claimed before one does not attach after it.
        var epoch = 0
        /// Every stream must join within the peer timeout of the HELLO, or of the resume.
        var joinDeadline: Double
    }
    private let state: ConditionValue<State>
    private let context: Context

    init(_ context: Context) {
        self.context = context
        state = ConditionValue(State(positions: Array(repeating: 0, count: context.routing.count - 1),
                                     joinDeadline: monotonicSeconds() + context.peerTimeoutSeconds))
    }

    var extraCount: Int { context.routing.count - 1 }
    /// The first failure of any extra stream other than a lost connection.
    var failure: MigrationFailure? { state.withLock { $0.failure } }
    /// A lost extra connection: the session suspends and waits for its source (§14.5).
    var lost: MigrationFailure? { state.withLock { $0.lost } }
    /// Per extra stream its next sequence, for ACK and RESUME_ACCEPT.
    var positions: [UInt64] { state.withLock { $0.positions } }
    var wireBytesReceived: UInt64 { state.withLock { $0.wireBytes } }

    /// A verified JOIN asks for stream `index`: refused if it is 0, past the session's
    /// count, ended, or already joined (§14.3); nothing changes then.
    func claim(_ index: Int) -> Claim {
        state.withLock { s in
            if s.stopped { return .refused("the session is ending") }
            if s.suspended { return .refused("the session is suspended: its streams join again after RESUME_ACCEPT") }
            guard index >= 1 && index < context.routing.count else {
                return .refused("stream \(index) does not exist: the session has \(context.routing.count) streams (0..<\(context.routing.count))")
            }
            guard !s.ended.contains(index) else { return .refused("stream \(index) ended: its STREAM_END was applied, it does not join again") }
            guard !s.joined.contains(index) else { return .refused("stream \(index) has already joined") }
            s.joined.insert(index)
            return .accepted(epoch: s.epoch)
        }
    }

    /// JOIN_ACCEPT went out on `stream`: its reader starts; `bytes` came with the JOIN.
    func attach(_ index: Int, epoch: Int, stream: TLSStream, bytes: [UInt8]) {
        let next = state.withLock { s -> UInt64? in
            guard !s.stopped && !s.suspended && s.epoch == epoch else { return nil }
            s.streams[index] = stream
            s.readers += 1
            return s.positions[index - 1]
        }
        guard let next else { return stream.close() }
        startThread(named: "stream-\(index)-reader") { [self, state] in
            let receiver = StreamReceiver(index: index, stream: stream, context: context, nextSequence: next,
                                          received: { n in state.withLock { $0.wireBytes += n } },
                                          decoded: { next in state.withLock { $0.positions[index - 1] = next } })
            do throws(MigrationFailure) {
                try receiver.run(bytes, isStopped: { state.withLock { $0.stopped } },
                                 ended: { state.withLock { _ = $0.ended.insert(index) } })
            } catch {
                state.withLock { s in
                    guard !s.stopped else { return }
                    if error.isConnectionLoss { s.lost = s.lost ?? error } else { s.failure = s.failure ?? error }
                }
            }
            state.withLock { $0.readers -= 1 }
        }
    }

    /// A connection of the session was lost (§14.5): every extra connection is closed
    /// and its reader waited for, each having applied what it decoded. Returns each
    /// stream's final position; throws a stream's failure other than a lost connection.
    func suspend() throws(MigrationFailure) -> [UInt64] {
        let streams = state.withLock { s -> [TLSStream] in
            s.suspended = true
            s.epoch += 1
            return Array(s.streams.values)
        }
        for stream in streams { stream.close() }
        return try state.wait(until: { $0.readers == 0 }) { (s: inout State, _) throws(MigrationFailure) -> [UInt64] in
            if let failure = s.failure { throw failure }
            s.streams = [:]
            s.lost = nil
            s.joined = s.ended  // an ended stream was applied whole: it does not join again
            return s.positions
        }
    }

    /// RESUME_ACCEPT went out: the streams may join again, within the peer timeout. Not
    /// before: a JOIN the source sent before this resume round is refused until then.
    func reopen() {
        state.withLock { s in
            s.suspended = false
            s.joinDeadline = monotonicSeconds() + context.peerTimeoutSeconds
        }
    }

    /// COMPLETE arrived on stream 0: READY waits until every extra stream ended and all
    /// its pages are applied (§14.4). Throws a stream's failure or loss, a cancel, or a
    /// timeout when a stream never joined. `whileWaiting` runs every 0.2 s meanwhile
    /// (the ACK cadence goes on: the extra streams may still be delivering, §13.3).
    func waitUntilAllEnded(isCancelled: () -> Bool, whileWaiting: () throws(MigrationFailure) -> Void) throws(MigrationFailure) {
        while true {
            try whileWaiting()
            let (done, failure, joined, deadline) = state.wait(until: { $0.ended.count == extraCount || $0.failure != nil || $0.lost != nil },
                                                               deadline: monotonicSeconds() + 0.2) { s, _ in
                (s.ended.count == extraCount, s.failure ?? s.lost, s.joined.count, s.joinDeadline)
            }
            if let failure { throw failure }
            if done { return }
            if isCancelled() { throw .cancelled }
            if joined < extraCount && monotonicSeconds() > deadline {
                throw .timeout("only \(joined) of the \(extraCount) extra streams the source announced joined within the peer timeout")
            }
        }
    }

    /// The session succeeded: each reader ends its stream's close_notify exchange (the
    /// source sends its own as it finishes), at most 2 s, then `stop()`.
    func finish() {
        state.wait(until: { $0.readers == 0 }, deadline: monotonicSeconds() + 2) { _, _ in }
        stop()
    }

    /// The session ends: every extra connection is closed and its reader waited for
    /// (its pipeline stops; nothing is applied after this returns).
    func stop() {
        let streams = state.withLock { s -> [TLSStream] in
            s.stopped = true
            return Array(s.streams.values)
        }
        for stream in streams { stream.close() }
        state.wait(until: { $0.readers == 0 }) { _, _ in }
    }
}

/// One extra stream's reader: decode (joined mode), decompress on workers, apply pages
/// in the stream's order on one consumer thread.
private struct StreamReceiver {
    typealias Pipeline = ReceivePipeline.Pipeline
    let index: Int
    let stream: TLSStream
    let context: DestinationStreams.Context
    /// Where the stream goes on: 0 at its first joining, its position after a resume.
    let nextSequence: UInt64
    let received: (UInt64) -> Void
    /// The stream's next sequence after each frame handed to the pipeline.
    let decoded: (UInt64) -> Void

    /// Reads until STREAM_END and applies every page before it (then `ended`); then
    /// close_notify both ways (§2.5: the source sends its own when the session ends).
    /// A lost connection drains the pipeline first: what was decoded is applied (§14.5).
    func run(_ first: [UInt8], isStopped: () -> Bool, ended: () -> Void) throws(MigrationFailure) {
        var decoder = FrameDecoder(joinedStream: index, routing: context.routing, memory: context.source.memory,
                                   encodings: context.source.encodings, limits: context.limits, nextSequence: nextSequence,
                                   version: ProtocolVersion(rawValue: context.source.version) ?? .v3)
        decoder.laneCount = context.pageDecoders[index - 1].lanes
        if !first.isEmpty { decoder.feed(first) }
        let pipeline = makePipeline()
        do throws(MigrationFailure) {
            stream.readTimeoutSeconds = min(0.2, context.peerTimeoutSeconds)
            stream.writeTimeoutSeconds = context.peerTimeoutSeconds
            var lastByte = monotonicSeconds()
            while true {
                if let e = pipeline.error { throw e }
                if isStopped() { throw .cancelled }
                let message: WireMessage?
                do { message = try decoder.nextMessage() } catch { throw MigrationFailure(error) }
                switch message {
                case .frame(let frame):
                    switch frame.body {
                    case .pages(let p): try pipeline.submit(passthrough: .pages(p))  // decoded by the applier
                    case .abort(let a): throw .peerAborted(a.reason, a.message)
                    default: break  // KEEPALIVE
                    }
                    decoded(decoder.position.nextSequence)
                case .resumption:  // STREAM_END: the decoder checked its index and frame count
                    try pipeline.finish()
                    decoded(decoder.position.nextSequence)
                    ended()
                    _ = try? stream.shutdownConfirmingPeer()
                    stream.close()
                    return
                case nil:
                    try read(into: &decoder, lastByte: &lastByte)
                }
            }
        } catch {
            stream.close()
            if error.isConnectionLoss && !isStopped() {
                try pipeline.finish()
                throw error
            }
            pipeline.abort(error)
            throw error
        }
    }

    private func read(into decoder: inout FrameDecoder, lastByte: inout Double) throws(MigrationFailure) {
        let count: Int
        do { count = try decoder.fill(from: stream) } catch {
            guard case .readTimeout = error else { throw .tls(error) }
            guard monotonicSeconds() - lastByte < context.peerTimeoutSeconds else {
                throw .tls(.readTimeout(seconds: context.peerTimeoutSeconds))
            }
            return
        }
        // A stream that ends before its STREAM_END is a lost connection (§13.4, §14.5).
        if count == 0 { throw .peerClosed }
        lastByte = monotonicSeconds()
        received(UInt64(count))
    }

    /// Only PAGES reach its applier (the decoder refuses anything else), so only its page path runs.
    private func makePipeline() -> Pipeline {
        let c = context
        return ReceivePipeline.make(name: "stream-\(index)", workers: max(1, c.workers / c.routing.count), limits: c.limits,
                                    devices: c.devices, memory: c.memory, writer: c.writer, pageDecoder: c.pageDecoders[index - 1],
                                    events: c.events, progress: c.progress, state: c.state,
                                    digest: DeviceDigestAlgorithm(sessionEncodings: c.source.encodings))
    }
}
