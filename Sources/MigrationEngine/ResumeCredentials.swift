import MigrationTLS
import MigrationWire

/// What a version-2 session keeps from its first connection to know a new one
/// belongs to it (PROTOCOL.md §13.2): the session id, the resume secret (exported,
/// never sent) and the name the peer's certificate was verified against.
struct ResumeCredentials: Sendable {
    let sessionID: [UInt8]
    let peerName: String
    /// The ALPN identifier the session's first connection selected: extra streams must
    /// select the same (version 3 or 4, §14.3, §15.1).
    let applicationProtocol: String?
    private let secret: [UInt8]

    /// Right after a successful HELLO exchange on the session's first connection.
    init(firstConnection stream: TLSStream, sessionID: [UInt8]) throws(MigrationFailure) {
        self.sessionID = sessionID
        peerName = stream.peerName
        applicationProtocol = stream.applicationProtocol
        secret = try Self.export(ResumeProof.secretLabel, from: stream, sessionID: sessionID)
    }

    /// The proof `role` sends on `stream` (each side computes its own and the one it expects).
    func proof(on stream: TLSStream, role: Role) throws(MigrationFailure) -> [UInt8] {
        let binding = try Self.export(ResumeProof.bindingLabel, from: stream, sessionID: sessionID)
        return ResumeProof.compute(secret: secret, binding: binding, role: role, sessionID: sessionID)
    }

    /// Our RESUME on `stream`, as its bytes.
    func resumeFrame(on stream: TLSStream, role: Role) throws(MigrationFailure) -> [UInt8] {
        try Self.handshakeFrame(.resume(Resume(sessionID: sessionID, role: role, proof: proof(on: stream, role: role))))
    }

    /// Whether the peer's RESUME carries the proof its role must send on `stream`.
    func verifies(_ resume: Resume, on stream: TLSStream) throws(MigrationFailure) -> Bool {
        ResumeProof.matches(resume.proof, try proof(on: stream, role: resume.role))
    }

    /// Version 3 (§14.3): the source's JOIN of `stream` as stream `index`.
    func joinFrame(on stream: TLSStream, index: Int) throws(MigrationFailure) -> [UInt8] {
        try Self.handshakeFrame(.join(Join(sessionID: sessionID, streamIndex: UInt32(index), proof: joinProof(on: stream, index: index))))
    }

    /// Whether a JOIN carries the proof its index must have on `stream`.
    func verifies(_ join: Join, on stream: TLSStream) throws(MigrationFailure) -> Bool {
        ResumeProof.matches(join.proof, try joinProof(on: stream, index: Int(join.streamIndex)))
    }

    private func joinProof(on stream: TLSStream, index: Int) throws(MigrationFailure) -> [UInt8] {
        let binding = try Self.export(ResumeProof.bindingLabel, from: stream, sessionID: sessionID)
        return ResumeProof.computeJoin(secret: secret, binding: binding, sessionID: sessionID, streamIndex: UInt32(index))
    }

    /// An unnumbered handshake frame (RESUME, RESUME_ACCEPT, REFUSE, JOIN, JOIN_ACCEPT).
    static func handshakeFrame(_ body: ResumptionBody) throws(MigrationFailure) -> [UInt8] {
        var encoder = FrameEncoder()  // handshake frames take no number from any stream
        do { return try encoder.encode(body) } catch { throw MigrationFailure(error) }
    }

    private static func export(_ label: String, from stream: TLSStream, sessionID: [UInt8]) throws(MigrationFailure) -> [UInt8] {
        do { return try stream.exportKeyingMaterial(label: label, context: sessionID, length: ResumeProof.exporterLength) } catch {
            throw .tls(error)
        }
    }
}

/// Reads the peer's handshake frames on a resuming connection, one at a time.
struct ResumeHandshakeReader {
    let stream: TLSStream
    var decoder: ResumeHandshakeDecoder

    /// How long a handshake may take before the connection is given up (§13.5).
    static let timeoutSeconds = 10.0

    init(stream: TLSStream, peer: Role, credentials: ResumeCredentials, limits: WireLimits, version: ProtocolVersion = .v2) {
        self.stream = stream
        decoder = ResumeHandshakeDecoder(peer: peer, sessionID: credentials.sessionID, limits: limits, version: version)
        stream.readTimeoutSeconds = Self.timeoutSeconds
        stream.writeTimeoutSeconds = Self.timeoutSeconds
    }

    mutating func next() throws(MigrationFailure) -> ResumeHandshakeDecoder.Message {
        while true {
            do throws(WireError) { if let message = try decoder.next() { return message } } catch { throw MigrationFailure(error) }
            let bytes: [UInt8]
            do { bytes = try stream.read(maxCount: 64 << 10) } catch { throw .tls(error) }
            if bytes.isEmpty { throw .peerClosed }
            decoder.feed(bytes)
        }
    }

    /// The peer's first numbered frames, which may have come with its last handshake frame.
    mutating func remainingBytes() -> [UInt8] { decoder.takeRemainingBytes() }

    /// Sends REFUSE and closes: the connection ends, the session does not (§13.8).
    func refuse(_ reason: RefusalReason, _ message: String) {
        if let bytes = try? ResumeCredentials.handshakeFrame(.refuse(Refusal(reason: reason, message: message))) {
            try? stream.write(bytes)
            try? stream.shutdown()
        }
        stream.close()
    }
}

extension MigrationFailure {
    /// A failed transport (version 2 suspends the session), as opposed to a peer that
    /// broke a rule or an error of this side (§13.4).
    var isConnectionLoss: Bool {
        switch self {
        case .peerClosed, .tls: return true
        default: return false
        }
    }
}
