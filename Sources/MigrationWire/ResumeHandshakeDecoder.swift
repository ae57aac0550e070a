/// Reads the peer's side of a resume handshake (docs/PROTOCOL.md §13.5) on a new
/// connection, before the session's `FrameDecoder` takes the connection over.
///
/// It is separate from the session's decoder because a destination verifies a
/// newcomer while the session may still be attached to the old connection (which
/// only a verified RESUME detaches), and because a refused connection must leave
/// the session's state untouched. Handshake frames are unnumbered (sequence 0).
///
/// The peer's frames, per its role:
/// - destination (read by the source): RESUME, then RESUME_ACCEPT; or, instead of
///   either, REFUSE or ABORT; or, instead of RESUME, a HELLO: the destination holds
///   no session and offers a new one.
/// - source (read by the destination): RESUME; or, instead, REFUSE or ABORT. (An
///   ABORT after RESUME, before the source's first numbered frame, is read by the
///   session's decoder after `resume()`.)
///
/// Errors are sticky, as in `FrameDecoder`.
public struct ResumeHandshakeDecoder: Sendable {
    public let peer: Role
    public let limits: WireLimits
    /// The session this connection resumes; a RESUME naming another is refused.
    public let sessionID: [UInt8]
    /// The connection's version: from 3 on, a source may answer with JOIN (§14.3).
    public let version: ProtocolVersion
    public private(set) var step: ResumeHandshakeStep = .awaitingResume

    private var buffer: [UInt8] = []
    private var failure: WireError?

    public enum Message: Sendable, Equatable {
        case resume(Resume)
        case resumeAccept(ResumeAccept)
        case refuse(Refusal)
        case abort(Abort)
        /// The destination greets with a new session: it does not hold this one.
        case hello(Hello)
        /// Version 3: the source adds this connection to the session as a stream.
        case join(Join)
        /// Version 3: the destination took the stream.
        case joinAccept(JoinAccept)
    }

    public init(peer: Role, sessionID: [UInt8], limits: WireLimits = .default, version: ProtocolVersion = .v2) {
        precondition(sessionID.count == Hello.sessionIDSize, "session id is 16 bytes")
        self.peer = peer
        self.version = version
        self.sessionID = sessionID
        self.limits = limits
    }

    public mutating func feed(_ bytes: [UInt8]) { buffer += bytes }

    /// The next handshake frame, nil if more bytes are needed or the handshake is over.
    public mutating func next() throws(WireError) -> Message? {
        if let failure { throw failure }
        guard step == .awaitingResume || step == .awaitingAccept else { return nil }
        do {
            return try decodeOne()
        } catch {
            failure = error
            throw error
        }
    }

    /// Bytes after the handshake: the peer's first numbered frames, which arrive
    /// right behind RESUME_ACCEPT. Feed them to the session's decoder after `resume`.
    public mutating func takeRemainingBytes() -> [UInt8] {
        precondition(step == .finished, "the handshake is not finished")
        defer { buffer = [] }
        return buffer
    }

    private mutating func decodeOne() throws(WireError) -> Message? {
        guard buffer.count >= FrameHeader.size else { return nil }
        let h = try FrameHeader.parse(buffer, at: 0, version: version)
        guard h.payloadLength <= limits.maxPayload else {
            throw .payloadTooLarge(frame: h.type, declared: h.payloadLength, limit: limits.maxPayload)
        }
        guard h.type.isSent(by: peer) else { throw .wrongRole(frame: h.type, sender: peer) }
        guard allowed(h.type) else { throw .unexpectedHandshakeFrame(type: h.type, step: step) }
        guard h.sequence == 0 else { throw .handshakeFrameNumbered(frame: h.type, sequence: h.sequence) }
        guard h.device == 0 else { throw .unexpectedDeviceIndex(frame: h.type, index: h.device) }
        guard buffer.count - FrameHeader.size >= h.payloadLength else { return nil }

        let end = FrameHeader.size + h.payloadLength
        var reader = ByteReader(buffer, range: FrameHeader.size..<end, frame: h.type)
        let message: Message
        switch h.type {
        case .resume, .resumeAccept, .refuse, .join, .joinAccept:
            switch try ResumptionBody.parsePayload(h.type, &reader, limits: limits, version: version) {
            case .resume(let r):
                guard r.role == peer else { throw .unexpectedRole(expected: peer, got: r.role) }
                guard r.sessionID == sessionID else { throw .sessionMismatch(frame: .resume) }
                message = .resume(r)
                step = peer == .destination ? .awaitingAccept : .finished
            case .resumeAccept(let a):
                message = .resumeAccept(a)
                step = .finished
            case .refuse(let r):
                message = .refuse(r)
                step = .closed
            case .join(let j):
                guard j.sessionID == sessionID else { throw .sessionMismatch(frame: .join) }
                message = .join(j)
                step = .finished
            case .joinAccept(let a):
                message = .joinAccept(a)
                step = .finished
            case .ack, .streamEnd:
                preconditionFailure("\(h.type) passed the handshake rules")
            }
        default:
            switch try FrameBody.parsePayload(h.type, &reader, limits: limits, version: .v2) {
            case .abort(let a): message = .abort(a)
            case .hello(let hello):
                guard hello.role == peer else { throw .unexpectedRole(expected: peer, got: hello.role) }
                message = .hello(hello)
            default: preconditionFailure("\(h.type) passed the handshake rules")
            }
            step = .closed
        }
        buffer.removeFirst(end)
        return message
    }

    private func allowed(_ type: FrameType) -> Bool {
        switch (peer, step) {
        case (.destination, .awaitingResume): return [.resume, .refuse, .abort, .hello].contains(type)
        case (.destination, .awaitingAccept): return [.resumeAccept, .joinAccept, .refuse, .abort].contains(type)
        case (.source, .awaitingResume): return [.resume, .join, .refuse, .abort].contains(type)
        default: return false
        }
    }
}
