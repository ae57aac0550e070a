/// Assigns contiguous sequence numbers and serialises frames.
///
/// The encoder trusts its caller for the contents (it is fed by our own engine);
/// structural invariants that would produce an unparseable frame (a session id that
/// is not 16 bytes, a digest that is not 32) are preconditions. The decoder is where
/// untrusted bytes are checked.
public struct FrameEncoder: Sendable {
    private var sequence: UInt64 = 0

    public init() {}

    public var nextSequence: UInt64 { sequence }

    public mutating func encode(_ body: FrameBody, device: UInt32 = 0) -> [UInt8] {
        defer { sequence += 1 }
        return FrameEncoder.serialize(body, device: device, sequence: sequence)
    }

    /// Appends the frame to `buffer`: several frames become one write without
    /// copying each frame a second time.
    public mutating func encode(_ body: FrameBody, device: UInt32 = 0, appendingTo buffer: inout [UInt8]) {
        defer { sequence += 1 }
        var w = ByteWriter(continuing: &buffer, reserving: FrameHeader.size + body.payloadSizeHint)
        FrameEncoder.write(body, device: device, sequence: sequence, to: &w)
        buffer = w.take()
    }

    /// One frame with an explicit sequence number (tests build bad streams with it).
    static func serialize(_ body: FrameBody, device: UInt32, sequence: UInt64) -> [UInt8] {
        var w = ByteWriter(capacity: FrameHeader.size + body.payloadSizeHint)
        write(body, device: device, sequence: sequence, to: &w)
        return w.take()
    }

    private static func write(_ body: FrameBody, device: UInt32, sequence: UInt64, to w: inout ByteWriter) {
        let start = w.bytes.count
        FrameHeader(type: body.type, flags: 0, device: device, payloadLength: 0, sequence: sequence).write(to: &w)
        body.writePayload(to: &w)
        let length = w.bytes.count - start - FrameHeader.size
        precondition(length <= Int(UInt32.max), "frame payload larger than 4 GiB")
        w.patchU32(UInt32(length), at: start + 12)
    }
}
