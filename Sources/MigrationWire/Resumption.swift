// Version 2: the frames that let a session survive a lost connection
// (docs/PROTOCOL.md §13). They are kept apart from `FrameBody`, the migration
// stream itself, because they never reach the applier or the session's data
// path: the handshake frames belong to the connection manager and ACK to the
// source's retained window. Version-1 code keeps its exhaustive switches.

/// Where the receiver of a source stream stands: every source frame with a lower
/// sequence number was received and checked (and will be applied), and how many
/// decoded DEVICE_DATA bytes of each device those frames carried.
public struct StreamPosition: Sendable, Equatable {
    /// The first source sequence number not received: the resume point.
    public var nextSequence: UInt64
    /// Per device (HELLO order): the sum of the original lengths of its DEVICE_DATA
    /// frames below `nextSequence`, as DEVICE_END's total bytes counts them.
    public var deviceBytes: [UInt64]
    /// Version 3, a session of S ≥ 2 streams (§14.5): per extra stream k = 1…S−1 (at
    /// k − 1), the first sequence of stream k not received; every frame of stream k
    /// below it is applied or will be. Empty in a one-stream session (no tail on the wire).
    public var streamSequences: [UInt64]
    public init(nextSequence: UInt64, deviceBytes: [UInt64], streamSequences: [UInt64] = []) {
        self.nextSequence = nextSequence; self.deviceBytes = deviceBytes; self.streamSequences = streamSequences
    }
}

/// What the destination has done with the session, as RESUME_ACCEPT reports it;
/// it replaces the destination frames the source may have lost with the connection.
public enum DestinationProgress: UInt8, Sendable, Comparable, CustomStringConvertible {
    /// READY not sent yet: the source continues its stream from the resume point.
    case receiving = 0
    /// READY was sent: everything through COMPLETE is applied and verified.
    case ready = 1
    /// COMMIT was received; RESUMED or ABORT follows on this connection.
    case resuming = 2
    /// RESUMED was sent: the devices run on the destination. The session is over.
    case resumed = 3

    public static func < (a: DestinationProgress, b: DestinationProgress) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .receiving: "receiving"
        case .ready: "ready"
        case .resuming: "resuming"
        case .resumed: "resumed"
        }
    }
}

/// RESUME: the first frame of each side on a connection that resumes a session.
public struct Resume: Sendable, Equatable {
    public var sessionID: [UInt8]          // 16 bytes
    public var role: Role
    /// `ResumeProof.compute` for this side, this session and this connection.
    public var proof: [UInt8]              // 32 bytes
    public init(sessionID: [UInt8], role: Role, proof: [UInt8]) {
        self.sessionID = sessionID; self.role = role; self.proof = proof
    }
}

/// RESUME_ACCEPT: the destination took the connection; both directions continue.
public struct ResumeAccept: Sendable, Equatable {
    public var progress: DestinationProgress
    /// The sequence number of the destination's next frame (its direction is not
    /// replayed: `progress` stands for the frames the source may have missed).
    public var destinationNextSequence: UInt64
    /// The resume point and device offsets: the source resends from here.
    public var position: StreamPosition
    public init(progress: DestinationProgress, destinationNextSequence: UInt64, position: StreamPosition) {
        self.progress = progress; self.destinationNextSequence = destinationNextSequence; self.position = position
    }
}

/// Why a side will not resume the session on this connection. A refusal ends the
/// connection, not the session: the refusing side keeps the session suspended.
public enum RefusalReason: UInt16, Sendable {
    case unspecified = 0
    /// The peer names a session this side does not hold (or no longer holds).
    case unknownSession = 1
    /// The peer's certificate is not the identity the session was established with.
    case wrongIdentity = 2
    /// The peer's proof is wrong: it does not hold the session's resume secret.
    case badProof = 3
    /// Another connection is being attached to the session at this moment; retry.
    case busy = 4
    /// Version 3 (§14.3): a JOIN whose stream index is 0, not below the session's
    /// stream count, or already joined; or a session that takes no streams.
    case streamRefused = 5

    /// Whether a source may try again on a new connection (only `busy` passes).
    public var isTransient: Bool { self == .busy }
}

public struct Refusal: Sendable, Equatable {
    public var reason: RefusalReason
    public var message: String
    public init(reason: RefusalReason, message: String) { self.reason = reason; self.message = message }
}

public enum ResumptionBody: Sendable, Equatable {
    case resume(Resume)
    case resumeAccept(ResumeAccept)
    case refuse(Refusal)
    /// Destination → source: where it stands; the source frees its retained window below it.
    case ack(StreamPosition)
    /// Version 3 (§14.3): the source adds this connection to the session as a stream.
    case join(Join)
    /// Version 3: the destination took the stream.
    case joinAccept(JoinAccept)
    /// Version 3 (§14.4): the last frame of an extra stream.
    case streamEnd(StreamEnd)

    public var type: FrameType {
        switch self {
        case .resume: .resume
        case .resumeAccept: .resumeAccept
        case .refuse: .refuse
        case .ack: .ack
        case .join: .join
        case .joinAccept: .joinAccept
        case .streamEnd: .streamEnd
        }
    }

    /// Handshake frames are outside the numbered stream (sequence 0); ACK is numbered.
    public var isHandshake: Bool { type.isHandshake }
}

public struct ResumptionFrame: Sendable, Equatable {
    public var sequence: UInt64
    public var body: ResumptionBody
    public init(sequence: UInt64, body: ResumptionBody) { self.sequence = sequence; self.body = body }
}

/// What a decoder yields: a frame of the migration stream (the version-1 set) or,
/// in a version-2 session, a resumption frame.
public enum WireMessage: Sendable, Equatable {
    case frame(Frame)
    case resumption(ResumptionFrame)
}

// MARK: - payloads

/// StreamPosition: 0 u64 next sequence, 8 u32 device count N, 12 u32 reserved,
/// 16 N × u64 device bytes. The same bytes in ACK and in RESUME_ACCEPT.
/// Version 3 with S ≥ 2 streams adds the stream tail (§14.5): u32 S − 1, u32
/// reserved, (S − 1) × u64 stream sequences. Before version 3 any tail is trailing bytes.
extension StreamPosition {
    static let fixedSize = 16
    static let tailHeaderSize = 8

    var encodedSize: Int {
        Self.fixedSize + 8 * deviceBytes.count + (streamSequences.isEmpty ? 0 : Self.tailHeaderSize + 8 * streamSequences.count)
    }

    func write(to w: inout ByteWriter) {
        w.u64(nextSequence); w.u32(UInt32(deviceBytes.count)); w.u32(0)
        for b in deviceBytes { w.u64(b) }
        guard !streamSequences.isEmpty else { return }
        w.u32(UInt32(streamSequences.count)); w.u32(0)
        for s in streamSequences { w.u64(s) }
    }

    /// The tail's count is held to the session's S − 1 by the decoder, which knows S.
    static func parse(_ r: inout ByteReader, version: ProtocolVersion) throws(WireError) -> StreamPosition {
        let next = try r.u64("next sequence")
        guard next > 0 else { throw .invalidValue(frame: r.frame, field: "next sequence (HELLO is always received)", value: 0) }
        let count = Int(try r.u32("device count"))
        try r.reserved(4, "reserved")
        // The payload bounds the array (and the payload is bounded by maxPayload);
        // the count is held to HELLO's by the decoder, which knows it.
        let bytes = try parseU64s(&r, count: count, field: "device count", value: "device bytes")
        guard version >= .v3, r.remaining > 0 else {
            try r.expectEnd()
            return StreamPosition(nextSequence: next, deviceBytes: bytes)
        }
        let streams = Int(try r.u32("extra stream count"))
        guard streams > 0 else { throw .invalidValue(frame: r.frame, field: "extra stream count (a stream tail names at least stream 1)", value: 0) }
        try r.reserved(4, "reserved")
        let sequences = try parseU64s(&r, count: streams, field: "extra stream count", value: "stream sequence")
        try r.expectEnd()
        return StreamPosition(nextSequence: next, deviceBytes: bytes, streamSequences: sequences)
    }

    private static func parseU64s(_ r: inout ByteReader, count: Int, field: String, value: String) throws(WireError) -> [UInt64] {
        guard count * 8 <= r.remaining else {
            throw .countExceedsPayload(frame: r.frame, field: field, count: UInt64(count), remainingBytes: r.remaining)
        }
        var values: [UInt64] = []
        values.reserveCapacity(count)
        for _ in 0..<count { values.append(try r.u64(value)) }
        return values
    }
}

extension ResumptionBody {
    func writePayload(to w: inout ByteWriter) {
        switch self {
        case .resume(let r):
            precondition(r.sessionID.count == Hello.sessionIDSize, "RESUME session id must be 16 bytes")
            precondition(r.proof.count == ResumeProof.size, "RESUME proof must be 32 bytes")
            w.append(r.sessionID); w.u8(r.role.rawValue); w.zeros(7); w.append(r.proof)
        case .resumeAccept(let a):
            w.u8(a.progress.rawValue); w.zeros(7); w.u64(a.destinationNextSequence)
            a.position.write(to: &w)
        case .refuse(let r):
            // The ABORT layout and its cut rule: one reader for both.
            let text = Abort.operatorText(r.message)
            w.u16(r.reason.rawValue); w.u16(UInt16(text.count)); w.append(text)
        case .ack(let p): p.write(to: &w)
        case .join(let j): j.write(to: &w)
        case .joinAccept(let a): w.u32(a.streamIndex); w.u32(0)
        case .streamEnd(let e): w.u32(e.streamIndex); w.u32(0); w.u64(e.frameCount)
        }
    }

    var payloadSizeHint: Int {
        switch self {
        case .resume: Resume.payloadSize
        case .resumeAccept(let a): 16 + a.position.encodedSize
        case .refuse: 4 + Abort.maxMessageBytes
        case .ack(let p): p.encodedSize
        case .join: Join.payloadSize
        case .joinAccept: JoinAccept.payloadSize
        case .streamEnd: StreamEnd.payloadSize
        }
    }

    static func parsePayload(_ type: FrameType, _ r: inout ByteReader, limits: WireLimits, version: ProtocolVersion = .v2) throws(WireError) -> ResumptionBody {
        switch type {
        case .resume:
            guard r.remaining == Resume.payloadSize else {
                throw .invalidPayloadLength(frame: type, expected: Resume.payloadSize, actual: r.remaining)
            }
            let session = try r.bytes(Hello.sessionIDSize, "session id")
            let rawRole = try r.u8("role")
            guard let role = Role(rawValue: rawRole) else { throw .invalidValue(frame: type, field: "role", value: UInt64(rawRole)) }
            try r.reserved(7, "reserved")
            let proof = try r.bytes(ResumeProof.size, "proof")
            return .resume(Resume(sessionID: session, role: role, proof: proof))
        case .resumeAccept:
            let rawProgress = try r.u8("destination state")
            guard let progress = DestinationProgress(rawValue: rawProgress) else {
                throw .invalidValue(frame: type, field: "destination state", value: UInt64(rawProgress))
            }
            try r.reserved(7, "reserved")
            let next = try r.u64("destination next sequence")
            let position = try StreamPosition.parse(&r, version: version)
            return .resumeAccept(ResumeAccept(progress: progress, destinationNextSequence: next, position: position))
        case .refuse:
            let rawReason = try r.u16("reason")
            let length = Int(try r.u16("text length"))
            let text = try r.bytes(length, "text")
            try r.expectEnd()
            // As ABORT: an unknown reason from a newer peer is a refusal all the same.
            return .refuse(Refusal(reason: RefusalReason(rawValue: rawReason) ?? .unspecified, message: String(decoding: text, as: UTF8.self)))
        case .ack:
            return .ack(try StreamPosition.parse(&r, version: version))
        case .join, .joinAccept, .streamEnd:
            return try parseStreamFrame(type, &r)
        default:
            preconditionFailure("\(type) is not a resumption frame")
        }
    }
}

/// RESUME: 0 [16] session id, 16 u8 role, 17 [7] reserved, 24 [32] proof.
extension Resume {
    static let payloadSize = 56
}
