import Foundation
import MigrationTLS
import MigrationWire
import SyncPrimitives

/// The destination's listener while a version-2 session lives (PROTOCOL.md §13.4,
/// §13.5): every new connection is checked on a thread of its own (TLS, identity,
/// then the RESUME proofs; at most `maxHandshakes` at once, each bounded by its 10 s
/// deadline), so neither a stalled peer nor a source that reconnects while this side
/// still believes in a half-open connection waits behind another. A verified
/// connection detaches the session from the old one (closed: the session thread's
/// read wakes) and waits for the session thread to pick it up (`waitForArrival`);
/// until the session thread has attached it (`attachEnded`), another verified
/// connection is refused `busy`.
final class ResumeAcceptor: Sendable {
    /// A verified connection and the source's first numbered bytes that came with its RESUME.
    struct Arrival: Sendable {
        let stream: TLSStream
        let bytes: [UInt8]
    }
    /// §13.5 step 4, one connection at a time.
    enum AttachStep {
        case idle
        /// Verified, the old connection closed; the session thread has not taken it yet.
        case offered(Arrival)
        /// The session thread answers it (RESUME_ACCEPT or the outcome).
        case attaching
    }
    private struct State {
        var current: TLSStream
        var attach = AttachStep.idle
        /// Connections in their handshake, closed by `stop()`.
        var handshaking: [ObjectIdentifier: TLSStream] = [:]
        var pending = 0
        var stopped = false
        var finished = false
    }
    private let state: ConditionValue<State>
    private let credentials: ResumeCredentials
    private let limits: WireLimits
    private let events: EventSink
    /// What a connection without version 2 gets: a HELLO and ABORT `incompatible`.
    private let versionOneRefusal: [UInt8]
    /// Version 3 with several streams (§14.3): where JOINs go (RESUME is served as
    /// always, §14.5). nil: JOINs are refused.
    private let joins: DestinationStreams?

    /// How often the accept loop looks at `stop()`.
    private static let pollSeconds = 0.25
    /// Handshakes checked at once; a further connection waits in the listen backlog.
    static let maxHandshakes = 4

    init(listener: TLSListener, credentials: ResumeCredentials, current: TLSStream, limits: WireLimits,
         versionOneRefusal: [UInt8], events: @escaping EventSink, joins: DestinationStreams? = nil) {
        state = ConditionValue(State(current: current))
        self.joins = joins
        self.credentials = credentials; self.limits = limits; self.events = events
        self.versionOneRefusal = versionOneRefusal
        startThread(named: "resume-acceptor") { [self] in acceptLoop(listener) }
    }

    /// The next verified connection, or nil at `deadline` (monotonic seconds) or once
    /// `isCancelled` says so. The caller owns the attach step until `attachEnded`.
    func waitForArrival(until deadline: Double, isCancelled: () -> Bool) -> Arrival? {
        while monotonicSeconds() < deadline && !isCancelled() {
            let slice = min(deadline, monotonicSeconds() + Self.pollSeconds)
            let arrival = state.wait(until: { if case .offered = $0.attach { true } else { false } }, deadline: slice) { s, _ -> Arrival? in
                guard case .offered(let arrival) = s.attach else { return nil }
                s.attach = .attaching
                return arrival
            }
            if let arrival { return arrival }
        }
        return nil
    }

    /// The attach step is over: `current` is the connection the session reads now
    /// (nil: the arrival was not attached, the session reads none).
    func attachEnded(current: TLSStream?) {
        state.withLock { s in
            if let current { s.current = current }
            s.attach = .idle
        }
    }

    /// Stops accepting (waits for the accept thread; a handshake in progress is cut
    /// short); an arrival nobody picked up is closed.
    func stop() {
        state.withLock { $0.stopped = true }
        state.wait(until: { $0.finished }) { s, _ in
            if case .offered(let arrival) = s.attach { arrival.stream.close() }
            s.attach = .idle
            for stream in s.handshaking.values { stream.close() }
        }
    }

    private func acceptLoop(_ listener: TLSListener) {
        while !state.withLock({ $0.stopped }) {
            let room = state.wait(until: { $0.pending < Self.maxHandshakes || $0.stopped },
                                  deadline: monotonicSeconds() + Self.pollSeconds) { s, _ in s.pending < Self.maxHandshakes && !s.stopped }
            guard room else { continue }
            let connection: PendingConnection
            do { connection = try listener.acceptPending(timeoutSeconds: Self.pollSeconds) } catch {
                if case .acceptTimeout = error { continue }
                if case .closed = error { break }
                events(.sessionRefused("\(error)"))
                continue
            }
            state.withLock { $0.pending += 1 }
            startThread(named: "resume-handshake") { [self] in
                defer { state.withLock { $0.pending -= 1 } }
                admit(connection)
            }
        }
        state.withLock { $0.finished = true }
    }

    /// One connection, start to end of its handshake: attached (offered to the session) or refused and closed.
    private func admit(_ connection: PendingConnection) {
        let stream: TLSStream
        do { stream = try connection.handshake() } catch {
            events(.sessionRefused("\(error)"))
            return
        }
        let key = ObjectIdentifier(stream)
        guard state.withLock({ s -> Bool in
            if !s.stopped { s.handshaking[key] = stream }
            return !s.stopped
        }) else { return stream.close() }
        defer { state.withLock { _ = $0.handshaking.removeValue(forKey: key) } }
        verify(stream)
    }

    /// The handshake on a new connection: a source that proves it holds the session
    /// is offered to the session thread; any other peer is refused and closed.
    private func verify(_ stream: TLSStream) {
        let version = ProtocolVersion.allCases.first { $0 >= .v2 && $0.alpnIdentifier == stream.applicationProtocol }
        guard let version else {
            // A version-1 source reads a HELLO first: then the ABORT, whose text it prints.
            try? stream.write(versionOneRefusal)
            try? stream.shutdown()
            stream.close()
            events(.sessionRefused("a connection without session resumption (protocol version 2) while a session waits for its source"))
            return
        }
        var handshake = ResumeHandshakeReader(stream: stream, peer: .source, credentials: credentials, limits: limits, version: version)
        guard stream.peerName == credentials.peerName else {
            return refuse(handshake, .wrongIdentity, "the source's certificate is \(stream.peerName), the session's is \(credentials.peerName)")
        }
        do throws(MigrationFailure) {
            let mine = try credentials.resumeFrame(on: stream, role: .destination)
            do throws(TLSError) { try stream.write(mine) } catch { throw .tls(error) }
            switch try handshake.next() {
            case .join(let join):
                return admit(join, on: stream, &handshake)
            case .resume(let theirs):
                guard try credentials.verifies(theirs, on: stream) else {
                    return refuse(handshake, .badProof, "the RESUME proof does not match this session's secret")
                }
                return offer(Arrival(stream: stream, bytes: handshake.remainingBytes()), handshake)
            case .refuse(let refusal):
                events(.sessionRefused("the resuming peer refused us (\(refusal.reason)): \(refusal.message)"))
            case .abort(let abort):
                events(.sessionRefused("the resuming peer gave up (\(abort.reason)): \(abort.message)"))
            case .resumeAccept, .hello, .joinAccept:
                preconditionFailure("a source's handshake carries none of these")
            }
        } catch {
            if case .wire(.sessionMismatch) = error {
                return refuse(handshake, .unknownSession, "this destination holds another session")
            }
            events(.sessionRefused("resume handshake failed: \(error)"))
        }
        stream.close()
    }

    /// §13.5 steps 3–4: the session goes to `arrival` unless another connection holds
    /// the attach step (then REFUSE `busy`: the source tries again after its backoff).
    private func offer(_ arrival: Arrival, _ handshake: ResumeHandshakeReader) {
        enum Claim { case taken(old: TLSStream), busy, stopped }
        let claim = state.withLock { s -> Claim in
            if s.stopped { return .stopped }
            guard case .idle = s.attach else { return .busy }
            s.attach = .offered(arrival)
            return .taken(old: s.current)
        }
        switch claim {
        case .taken(let old): old.close()  // the session lets go of the old connection at once
        case .busy: refuse(handshake, .busy, "another connection is being attached to this session; retry")
        case .stopped: arrival.stream.close()
        }
    }

    /// §14.3: a JOIN with the right proof for an index the session still lacks gets
    /// JOIN_ACCEPT and its reader; any other is refused and changes nothing.
    private func admit(_ join: Join, on stream: TLSStream, _ handshake: inout ResumeHandshakeReader) {
        guard let joins else { return refuse(handshake, .streamRefused, "this session takes no extra streams") }
        guard (try? credentials.verifies(join, on: stream)) == true else {
            return refuse(handshake, .badProof, "the JOIN proof does not match this session's secret")
        }
        let index = Int(join.streamIndex)
        let epoch: Int
        switch joins.claim(index) {
        case .accepted(let claimed): epoch = claimed
        case .refused(let why): return refuse(handshake, .streamRefused, why)
        }
        guard let accept = try? ResumeCredentials.handshakeFrame(.joinAccept(JoinAccept(streamIndex: join.streamIndex))),
              (try? stream.write(accept)) != nil else {
            // The claimed index never gets its reader: the barrier before READY fails the session.
            events(.sessionRefused("stream \(index) broke during its JOIN"))
            return stream.close()
        }
        joins.attach(index, epoch: epoch, stream: stream, bytes: handshake.remainingBytes())
    }

    private func refuse(_ handshake: ResumeHandshakeReader, _ reason: RefusalReason, _ why: String) {
        events(.sessionRefused("resume refused (\(reason)): \(why)"))
        handshake.refuse(reason, "destination: \(why)")
    }
}

extension HelloExchange {
    /// What a connection without version 2 reads while a session waits for its source
    /// (§13.8): a version-1 HELLO like the session's (a fresh session id), so a
    /// version-1 source gets past its first frame, then ABORT `incompatible` saying why.
    func versionOneRefusal(encodings: [Encoding]) throws(MigrationFailure) -> [UInt8] {
        let hello = destinationHello(encodings: encodings, version: .v1)
        let abort = Abort(reason: .incompatible, message: "destination: a session is suspended here, waiting for its source to resume it (protocol version 2); no new session is accepted until it ends")
        var encoder = FrameEncoder()
        do throws(WireError) { return try encoder.encode(.hello(hello)) + encoder.encode(.abort(abort)) } catch { throw MigrationFailure(error) }
    }
}
