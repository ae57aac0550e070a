/// Assigns contiguous sequence numbers and serialises frames.
///
/// The encoder trusts its caller for the contents (it is fed by our own engine);
/// structural invariants that would produce an unparseable frame (a session id that
/// is not 16 bytes, a digest that is not 32) are preconditions. A payload too large
/// for the header's u32 length is a typed error. The decoder is where untrusted
/// bytes are checked.
public struct FrameEncoder: Sendable {
    private var sequence: UInt64 = 0

    public init() {}

    public var nextSequence: UInt64 { sequence }

    public mutating func encode(_ body: FrameBody, device: UInt32 = 0) throws(WireError) -> [UInt8] {
        let bytes = try FrameEncoder.frame(body, device: device, sequence: sequence)
        sequence += 1
        return bytes
    }

    /// Appends the frame to `buffer`: several frames become one write without
    /// copying each frame a second time.
    public mutating func encode(_ body: FrameBody, device: UInt32 = 0, appendingTo buffer: inout [UInt8]) throws(WireError) {
        var w = ByteWriter(continuing: &buffer, reserving: FrameHeader.size + body.payloadSizeHint)
        defer { buffer = w.take() }
        try FrameEncoder.write(body, device: device, sequence: sequence, to: &w)
        sequence += 1
    }

    /// Version 2 (§13). ACK is numbered like any frame of the direction; the
    /// handshake frames (RESUME, RESUME_ACCEPT, REFUSE) are unnumbered: sequence 0,
    /// and the direction's numbering does not advance.
    public mutating func encode(_ body: ResumptionBody) throws(WireError) -> [UInt8] {
        guard !body.isHandshake else { return try FrameEncoder.frame(body, sequence: 0) }
        let bytes = try FrameEncoder.frame(body, sequence: sequence)
        sequence += 1
        return bytes
    }

    /// An ABORT sent in a resume handshake, before this side's first numbered frame
    /// on the connection (it does not know the resume point yet): sequence 0.
    public static func handshakeAbort(_ abort: Abort) -> [UInt8] {
        do { return try frame(.abort(abort), device: 0, sequence: 0) } catch {
            preconditionFailure("an ABORT's text is cut to 1024 bytes: \(error)")
        }
    }

    /// A frame the source regenerates at its original sequence number when it
    /// replays its window (§13.7): PAGES read again, KEEPALIVE. Every other frame is
    /// replayed from its retained bytes, never encoded a second time.
    public func regenerated(_ body: FrameBody, sequence replayed: UInt64) throws(WireError) -> [UInt8] {
        precondition(replayed < sequence, "only a frame already sent can be replayed")
        switch body {
        case .pages, .keepAlive: return try FrameEncoder.frame(body, device: 0, sequence: replayed)
        default: preconditionFailure("\(body.type) is replayed byte for byte from the retained window")
        }
    }

    static func frame(_ body: ResumptionBody, sequence: UInt64) throws(WireError) -> [UInt8] {
        var w = ByteWriter(capacity: FrameHeader.size + body.payloadSizeHint)
        FrameHeader(type: body.type, flags: 0, device: 0, payloadLength: 0, sequence: sequence).write(to: &w)
        body.writePayload(to: &w)
        let length = w.bytes.count - FrameHeader.size
        guard let encoded = UInt32(exactly: length) else {
            throw .sizeNotRepresentable(what: "\(body.type) payload", bytes: UInt64(length), limit: UInt64(UInt32.max))
        }
        w.patchU32(encoded, at: 12)
        return w.take()
    }

    /// One frame with an explicit sequence number.
    static func frame(_ body: FrameBody, device: UInt32, sequence: UInt64) throws(WireError) -> [UInt8] {
        var w = ByteWriter(capacity: FrameHeader.size + body.payloadSizeHint)
        try write(body, device: device, sequence: sequence, to: &w)
        return w.take()
    }

    /// On failure the buffer is left as it was (the partial frame is cut off).
    private static func write(_ body: FrameBody, device: UInt32, sequence: UInt64, to w: inout ByteWriter) throws(WireError) {
        let start = w.bytes.count
        FrameHeader(type: body.type, flags: 0, device: device, payloadLength: 0, sequence: sequence).write(to: &w)
        body.writePayload(to: &w)
        let length = w.bytes.count - start - FrameHeader.size
        guard let encoded = UInt32(exactly: length) else {
            w.truncate(to: start)
            throw .sizeNotRepresentable(what: "\(body.type) payload", bytes: UInt64(length), limit: UInt64(UInt32.max))
        }
        w.patchU32(encoded, at: start + 12)
    }
}
