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
final class DestinationStreams: Sendable {
    /// What every stream's reader and applier need from the session.
    struct Context: Sendable {
        let routing: StreamRouting
        let source: Hello
        let limits: WireLimits
        let workers: Int
        let peerTimeoutSeconds: Double
        let devices: [DestinationDevice]
        let memory: GuestMemory?
        let writer: FrameWriter
        let events: EventSink
        let progress: LockedValue<ApplyProgress>
        let state: LockedValue<DestinationSession.State>
    }
    enum Claim: Equatable {
        case accepted
        case refused(String)
    }
    private struct State {
        var joined: Set<Int> = []
        var ended: Set<Int> = []
        var streams: [Int: TLSStream] = [:]
        var failure: MigrationFailure?
        var readers = 0
        var wireBytes: UInt64 = 0
        var stopped = false
    }
    private let state = ConditionValue(State())
    private let context: Context
    /// When the source's HELLO was accepted: every stream must join within the peer timeout.
    private let joinDeadline: Double

    init(_ context: Context) {
        self.context = context
        joinDeadline = monotonicSeconds() + context.peerTimeoutSeconds
    }

    var extraCount: Int { context.routing.count - 1 }
    /// The first failure of any extra stream (a lost connection is one: §14.5).
    var failure: MigrationFailure? { state.withLock { $0.failure } }
    var wireBytesReceived: UInt64 { state.withLock { $0.wireBytes } }

    /// A verified JOIN asks for stream `index`: refused if it is 0, past the session's
    /// count or already joined (§14.3); nothing changes then.
    func claim(_ index: Int) -> Claim {
        state.withLock { s in
            if s.stopped { return .refused("the session is ending") }
            guard index >= 1 && index < context.routing.count else {
                return .refused("stream \(index) does not exist: the session has \(context.routing.count) streams (0..<\(context.routing.count))")
            }
            guard !s.joined.contains(index) else { return .refused("stream \(index) has already joined") }
            s.joined.insert(index)
            return .accepted
        }
    }

    /// JOIN_ACCEPT went out on `stream`: its reader starts; `bytes` came with the JOIN.
    func attach(_ index: Int, stream: TLSStream, bytes: [UInt8]) {
        let accepted = state.withLock { s -> Bool in
            guard !s.stopped else { return false }
            s.streams[index] = stream
            s.readers += 1
            return true
        }
        guard accepted else { return stream.close() }
        startThread(named: "stream-\(index)-reader") { [self] in
            let receiver = StreamReceiver(index: index, stream: stream, context: context) { [state] n in state.withLock { $0.wireBytes += n } }
            do throws(MigrationFailure) {
                try receiver.run(bytes, isStopped: { [state] in state.withLock { $0.stopped } },
                                 ended: { [state] in state.withLock { _ = $0.ended.insert(index) } })
            } catch {
                state.withLock { if $0.failure == nil && !$0.stopped { $0.failure = error } }
            }
            state.withLock { $0.readers -= 1 }
        }
    }

    /// COMPLETE arrived on stream 0: READY waits until every extra stream ended and all
    /// its pages are applied (§14.4). Throws a stream's failure, a cancel, or a timeout
    /// when a stream never joined.
    func waitUntilAllEnded(isCancelled: () -> Bool) throws(MigrationFailure) {
        while true {
            let (done, failure, joined) = state.wait(until: { $0.ended.count == extraCount || $0.failure != nil },
                                                     deadline: monotonicSeconds() + 0.2) { s, _ in
                (s.ended.count == extraCount, s.failure, s.joined.count)
            }
            if let failure { throw failure }
            if done { return }
            if isCancelled() { throw .cancelled }
            if joined < extraCount && monotonicSeconds() > joinDeadline {
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
    let received: (UInt64) -> Void

    /// Reads until STREAM_END and applies every page before it (then `ended`); then
    /// close_notify both ways (§2.5: the source sends its own when the session ends).
    func run(_ first: [UInt8], isStopped: () -> Bool, ended: () -> Void) throws(MigrationFailure) {
        var decoder = FrameDecoder(joinedStream: index, routing: context.routing, memory: context.source.memory,
                                   encodings: context.source.encodings, limits: context.limits)
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
                    default: continue  // KEEPALIVE
                    }
                case .resumption:  // STREAM_END: the decoder checked its index and frame count
                    try pipeline.finish()
                    ended()
                    _ = try? stream.shutdownConfirmingPeer()
                    stream.close()
                    return
                case nil:
                    try read(into: &decoder, lastByte: &lastByte)
                }
            }
        } catch {
            pipeline.abort(error)
            stream.close()
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
        // The stream ends only after STREAM_END (§14.5: a lost stream fails the session).
        if count == 0 { throw .unexpectedFrame("stream \(index) ended before its STREAM_END") }
        lastByte = monotonicSeconds()
        received(UInt64(count))
    }

    /// Only PAGES reach its applier (the decoder refuses anything else), so only its page path runs.
    private func makePipeline() -> Pipeline {
        let c = context
        return ReceivePipeline.make(name: "stream-\(index)", workers: max(1, c.workers / c.routing.count), limits: c.limits,
                                    devices: c.devices, memory: c.memory, writer: c.writer, events: c.events, progress: c.progress, state: c.state)
    }
}
