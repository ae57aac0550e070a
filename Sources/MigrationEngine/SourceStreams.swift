import MigrationTLS
import MigrationWire
import SyncPrimitives

/// Version 3 (PROTOCOL.md §14), source: the session's extra streams 1..<count.
/// Each is a TLS connection of its own, joined to the session (JOIN), with its own
/// writer (its own numbering from 0) and keep-alive; the session feeds each its
/// own send pipeline with the pages whose PFNs it owns (`routing`). The source
/// never reads an extra stream after its JOIN_ACCEPT: the destination speaks on
/// stream 0 only.
final class SourceStreams {
    struct Extra {
        let index: Int
        let writer: FrameWriter
        let keepAlive: PeriodicTask
    }
    let routing: StreamRouting
    let extras: [Extra]
    /// What the reconnection (on the peer reader thread) does with these streams.
    let links: ExtraStreamLinks

    /// §14.5: each extra stream keeps what it sent until the destination's positions
    /// cover it, and its loss (`onLost`) suspends the whole session.
    struct Retention {
        let window: Int
        let onLost: @Sendable () -> Void
        /// Stream 0's first connection: what a stream that could not join writes to
        /// until the resume joins it (nothing: it starts lost, its writers wait).
        let firstConnection: TLSStream
    }

    /// Opens and joins streams 1..<routing.count, each retaining before its first frame
    /// (a keep-alive). A join whose connection fails, or that the destination refuses
    /// `streamRefused` or `busy` (it suspended first), is a loss like any (§14.3): the
    /// stream starts lost, which suspends the session, and the resume joins it; the
    /// streams after it start lost too. Any other failure closes the ones open and throws.
    init(routing: StreamRouting, connect: @escaping Reconnect, credentials: ResumeCredentials, options: SenderOptions,
         bandwidth: BandwidthLimiter, retention: Retention) throws(MigrationFailure) {
        self.routing = routing
        var opened: [Extra] = []
        var suspended = false
        for index in 1..<routing.count {
            let joined: TLSStream?
            do throws(MigrationFailure) {
                joined = suspended ? nil : try Self.joinFirst(index, connect: connect, credentials: credentials, options: options)
            } catch {
                // Given up first: a keep-alive waiting for a replay must not hold `stop` up.
                for extra in opened { extra.writer.abandonResumption(error); extra.keepAlive.stop(); extra.writer.stream.close() }
                throw error
            }
            // One limiter for every stream: `--bandwidth` caps the session, not each connection.
            let writer = FrameWriter(stream: joined ?? retention.firstConnection, limiter: bandwidth)
            writer.enableResumption(policy: .waitForReplay, window: retention.window, deviceCount: 0, onLost: retention.onLost)
            if joined == nil {
                writer.markLost(writer.stream)  // `onLost` closes stream 0: its reader thread resumes the session
                suspended = true
            }
            opened.append(Extra(index: index, writer: writer, keepAlive: startKeepAlive(writer: writer, peerTimeoutSeconds: options.peerTimeoutSeconds)))
        }
        extras = opened
        links = ExtraStreamLinks(writers: opened.map(\.writer), connect: connect, credentials: credentials, options: options)
    }

    var wireBytesSent: UInt64 { extras.reduce(0) { $0 + $1.writer.wireBytesSent } }

    /// Every page of stream `extra` was written: STREAM_END, its last frame (§14.4).
    func end(_ extra: Extra) throws(MigrationFailure) {
        extra.keepAlive.stop()
        try links.sendStreamEnd(extra.index)
    }

    /// The session succeeded: close_notify on every extra stream and a bounded read of
    /// the destination's, which it sent once it applied the stream (§2.5, §14.4).
    func shutDown() {
        for extra in extras {
            try? extra.writer.stream.shutdown()
            extra.writer.stream.close()
        }
    }

    /// The session failed: writers waiting for a resume give up, no more keep-alives,
    /// every extra connection closed at once (the destination learns why on stream 0).
    func close(_ failure: MigrationFailure) {
        links.abandon(failure)
        for extra in extras {
            extra.keepAlive.stop()
            extra.writer.stream.close()
        }
    }

    /// How a JOIN ended: its connection is stream `index` now, or the destination
    /// refused it.
    enum JoinAnswer {
        case joined(TLSStream)
        case refused(Refusal)

        /// A refusal that means the destination suspended the session (or still counts
        /// an older round's JOIN): the session resumes (§14.3); any other ends it.
        var suspendsTheSession: Bool {
            guard case .refused(let refusal) = self else { return false }
            return refusal.reason == .streamRefused || refusal.reason.isTransient
        }

        /// The joined stream; a refusal is an incompatible destination.
        func stream(_ index: Int) throws(MigrationFailure) -> TLSStream {
            switch self {
            case .joined(let stream): return stream
            case .refused(let refusal): throw .incompatible(SourceStreams.refusedText(index, refusal))
            }
        }
    }

    /// A first join: the stream, or nil when it is a loss (its connection failed, or a
    /// refusal that `suspendsTheSession`).
    private static func joinFirst(_ index: Int, connect: Reconnect, credentials: ResumeCredentials,
                                  options: SenderOptions) throws(MigrationFailure) -> TLSStream? {
        let answer: JoinAnswer
        do throws(MigrationFailure) { answer = try join(index, connect: connect, credentials: credentials, options: options) } catch {
            if error.isConnectionLoss { return nil }
            throw error
        }
        return answer.suspendsTheSession ? nil : try answer.stream(index)
    }

    static func refusedText(_ index: Int, _ refusal: Refusal) -> String {
        "the destination refused stream \(index) (\(refusal.reason)): \(refusal.message)"
    }

    /// One extra connection (§14.3): TLS with version 3 and the session's destination,
    /// the destination's RESUME (its proof checked), our JOIN, its JOIN_ACCEPT.
    static func join(_ index: Int, connect: Reconnect, credentials: ResumeCredentials,
                     options: SenderOptions) throws(MigrationFailure) -> JoinAnswer {
        let stream: TLSStream
        do { stream = try connect() } catch { throw .tls(error) }
        do throws(MigrationFailure) {
            // The session's version, 3 or later (§14.3, §15.1, §16.1), selected from the same offer.
            guard stream.applicationProtocol == credentials.applicationProtocol,
                  let version = ProtocolVersion.negotiated(alpn: stream.applicationProtocol, offered: options.applicationProtocols),
                  version >= .v3 else {
                throw .incompatible("stream \(index): the destination selected \(stream.applicationProtocol ?? "no protocol") on the extra connection, the session is \(credentials.applicationProtocol ?? "version 1")")
            }
            guard stream.peerName == credentials.peerName else {
                throw .incompatible("stream \(index): the destination presented \(stream.peerName), the session's is \(credentials.peerName)")
            }
            var handshake = ResumeHandshakeReader(stream: stream, peer: .destination, credentials: credentials, limits: options.limits, version: version)
            let theirs = try expectResume(&handshake, index: index)
            guard try credentials.verifies(theirs, on: stream) else {
                handshake.refuse(.badProof, "source: the destination's proof does not match this session's secret")
                throw .incompatible("stream \(index): the destination's RESUME proof is wrong")
            }
            let join = try credentials.joinFrame(on: stream, index: index)
            do throws(TLSError) { try stream.write(join) } catch { throw .tls(error) }
            switch try handshake.next() {
            case .joinAccept(let accept) where Int(accept.streamIndex) == index: break
            case .refuse(let refusal):
                stream.close()
                return .refused(refusal)
            case .abort(let abort): throw .peerAborted(abort.reason, abort.message)
            default: throw .unexpectedFrame("stream \(index): expected JOIN_ACCEPT of stream \(index)")
            }
        } catch {
            stream.close()
            throw error
        }
        stream.readTimeoutSeconds = options.peerTimeoutSeconds
        stream.writeTimeoutSeconds = options.peerTimeoutSeconds
        return .joined(stream)
    }

    private static func expectResume(_ handshake: inout ResumeHandshakeReader, index: Int) throws(MigrationFailure) -> Resume {
        switch try handshake.next() {
        case .resume(let theirs): return theirs
        case .refuse(let refusal): throw .incompatible(refusedText(index, refusal))
        case .abort(let abort): throw .peerAborted(abort.reason, abort.message)
        default: throw .unexpectedFrame("stream \(index): the destination did not greet the extra connection with RESUME")
        }
    }
}

@available(*, unavailable, message: "the source session's thread owns its streams")
extension SourceStreams: Sendable {}

/// Version 3 with resumption (§14.5), source: the extra streams as the reconnection
/// sees them. On a loss every extra connection is dropped with stream 0's; after
/// RESUME_ACCEPT each stream the destination still needs joins again on a new
/// connection and its writer replays what the destination's position for it lacks.
struct ExtraStreamLinks: Sendable {
    /// Stream k's writer at k − 1.
    let writers: [FrameWriter]
    let connect: Reconnect
    let credentials: ResumeCredentials
    let options: SenderOptions
    /// Streams whose STREAM_END was numbered.
    private let endedStreams = LockedValue(Set<Int>())

    init(writers: [FrameWriter], connect: @escaping Reconnect, credentials: ResumeCredentials, options: SenderOptions) {
        self.writers = writers; self.connect = connect; self.credentials = credentials; self.options = options
    }

    /// Whether stream `index`'s STREAM_END was numbered: a resume may find it applied.
    func hasEnded(_ index: Int) -> Bool { endedStreams.withLock { $0.contains(index) } }

    /// STREAM_END on stream `index`, its last frame (§14.4). The stream counts as ended
    /// once the frame is numbered, not when the write returns (the bandwidth limiter
    /// may sleep after it): a resume meanwhile may find it applied already.
    func sendStreamEnd(_ index: Int) throws(MigrationFailure) {
        try writers[index - 1].sendStreamEnd(index: index) { endedStreams.withLock { _ = $0.insert(index) } }
    }

    /// An ACK's stream sequences free each stream's window below them.
    func acknowledge(_ sequences: [UInt64]) throws(MigrationFailure) {
        for (writer, next) in zip(writers, sequences) { try writer.acknowledge(Self.position(next)) }
    }

    /// The session lost a connection: every extra one is marked lost and closed, so
    /// their writers wait for the replay.
    func suspend() {
        for writer in writers { writer.markLost(writer.stream) }
    }

    func abandon(_ failure: MigrationFailure) {
        for writer in writers { writer.abandonResumption(failure) }
    }

    enum Rejoin {
        /// Every stream the destination still needs joined; the bytes replayed.
        case rejoined(replayed: UInt64)
        /// A JOIN was refused `streamRefused` or `busy`: the destination suspended the
        /// session again (a loss during the joins) or holds an older round's JOIN. The
        /// session is resumed again, as after any loss (§14.5).
        case refused(String)
    }

    /// After RESUME_ACCEPT: stream k joins again and replays from `sequences[k − 1]`,
    /// unless the destination already applied its STREAM_END.
    func rejoin(_ sequences: [UInt64],
                regenerate: (RetainedWindow.ReplayItem, FrameEncoder) throws(MigrationFailure) -> [UInt8]) throws(MigrationFailure) -> Rejoin {
        let ended = endedStreams.current
        var replayed: UInt64 = 0
        for (i, (writer, next)) in zip(writers, sequences).enumerated() {
            let index = i + 1
            if ended.contains(index) && next == writer.nextSequence { continue }
            let answer = try SourceStreams.join(index, connect: connect, credentials: credentials, options: options)
            if case .refused(let refusal) = answer, answer.suspendsTheSession { return .refused(SourceStreams.refusedText(index, refusal)) }
            let stream = try answer.stream(index)
            do throws(MigrationFailure) {
                replayed += try writer.reattach(stream, replayingFrom: Self.position(next), regenerate: regenerate)
            } catch {
                stream.close()
                throw error
            }
        }
        return .rejoined(replayed: replayed)
    }

    private static func position(_ next: UInt64) -> StreamPosition { StreamPosition(nextSequence: next, deviceBytes: []) }
}
