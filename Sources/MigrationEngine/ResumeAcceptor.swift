import Foundation
import MigrationTLS
import MigrationWire
import SyncPrimitives

/// The destination's listener while a version-2 session lives (PROTOCOL.md §13.4,
/// §13.5): every new connection is checked on a thread of its own (identity, then
/// the RESUME proofs), so a source that reconnects while this side still believes
/// in a half-open connection is taken at once. A verified connection detaches the
/// session from the old one (closed: the session thread's read wakes) and waits
/// for the session thread to pick it up (`waitForArrival`).
final class ResumeAcceptor: Sendable {
    /// A verified connection and the source's first numbered bytes that came with its RESUME.
    struct Arrival: Sendable {
        let stream: TLSStream
        let bytes: [UInt8]
    }
    private struct State {
        var current: TLSStream
        var arrival: Arrival?
        var stopped = false
        var finished = false
    }
    private let state: ConditionValue<State>
    private let credentials: ResumeCredentials
    private let limits: WireLimits
    private let events: EventSink

    /// How often the accept loop looks at `stop()`.
    private static let pollSeconds = 0.25

    init(listener: TLSListener, credentials: ResumeCredentials, current: TLSStream, limits: WireLimits, events: @escaping EventSink) {
        state = ConditionValue(State(current: current))
        self.credentials = credentials; self.limits = limits; self.events = events
        startThread(named: "resume-acceptor") { [self] in acceptLoop(listener) }
    }

    /// The connection the session reads now (the one a verified newcomer replaces).
    func setCurrent(_ stream: TLSStream) { state.withLock { $0.current = stream } }

    /// The next verified connection, or nil at `deadline` (monotonic seconds) or once
    /// `isCancelled` says so.
    func waitForArrival(until deadline: Double, isCancelled: () -> Bool) -> Arrival? {
        while monotonicSeconds() < deadline && !isCancelled() {
            let slice = min(deadline, monotonicSeconds() + Self.pollSeconds)
            let arrival = state.wait(until: { $0.arrival != nil }, deadline: slice) { s, _ -> Arrival? in
                defer { s.arrival = nil }
                return s.arrival
            }
            if let arrival { return arrival }
        }
        return nil
    }

    /// Stops accepting (waits for the thread); an arrival nobody picked up is closed.
    func stop() {
        state.withLock { $0.stopped = true }
        state.wait(until: { $0.finished }) { s, _ in
            s.arrival?.stream.close()
            s.arrival = nil
        }
    }

    private func acceptLoop(_ listener: TLSListener) {
        while !state.withLock({ $0.stopped }) {
            let stream: TLSStream
            do { stream = try listener.accept(timeoutSeconds: Self.pollSeconds) } catch {
                if case .acceptTimeout = error { continue }
                if case .closed = error { break }
                events(.sessionRefused("\(error)"))
                continue
            }
            guard let bytes = verify(stream) else { continue }
            let old = state.withLock { s -> TLSStream? in
                if s.stopped { return stream }
                s.arrival?.stream.close()  // the source uses one connection at a time: the newest is the live one
                s.arrival = Arrival(stream: stream, bytes: bytes)
                return s.current
            }
            // §13.5 step 4: the session lets go of the old connection at once.
            old?.close()
        }
        state.withLock { $0.finished = true }
    }

    /// The handshake on a new connection: the source's first numbered bytes once it
    /// proved it holds the session, nil (connection refused and closed) otherwise.
    private func verify(_ stream: TLSStream) -> [UInt8]? {
        guard stream.applicationProtocol == ProtocolVersion.v2.alpnIdentifier else {
            try? stream.write(FrameEncoder.handshakeAbort(Abort(reason: .incompatible, message: "destination: a suspended session waits here for its source; no new session is accepted")))
            stream.close()
            events(.sessionRefused("a connection without session resumption (protocol version 2) while a session waits for its source"))
            return nil
        }
        var handshake = ResumeHandshakeReader(stream: stream, peer: .source, credentials: credentials, limits: limits)
        guard stream.peerName == credentials.peerName else {
            refuse(handshake, .wrongIdentity, "the source's certificate is \(stream.peerName), the session's is \(credentials.peerName)")
            return nil
        }
        do throws(MigrationFailure) {
            let mine = try credentials.resumeFrame(on: stream, role: .destination)
            do throws(TLSError) { try stream.write(mine) } catch { throw .tls(error) }
            switch try handshake.next() {
            case .resume(let theirs):
                guard try credentials.verifies(theirs, on: stream) else {
                    refuse(handshake, .badProof, "the RESUME proof does not match this session's secret")
                    return nil
                }
                return handshake.remainingBytes()
            case .refuse(let refusal):
                events(.sessionRefused("the resuming peer refused us (\(refusal.reason)): \(refusal.message)"))
            case .abort(let abort):
                events(.sessionRefused("the resuming peer gave up (\(abort.reason)): \(abort.message)"))
            case .resumeAccept, .hello:
                preconditionFailure("a source's handshake carries neither")
            }
        } catch {
            if case .wire(.sessionMismatch) = error {
                refuse(handshake, .unknownSession, "this destination holds another session")
                return nil
            }
            events(.sessionRefused("resume handshake failed: \(error)"))
        }
        stream.close()
        return nil
    }

    private func refuse(_ handshake: ResumeHandshakeReader, _ reason: RefusalReason, _ why: String) {
        events(.sessionRefused("resume refused (\(reason)): \(why)"))
        handshake.refuse(reason, "destination: \(why)")
    }
}
