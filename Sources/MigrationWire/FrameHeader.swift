/// Frame type codes (header offset 4). 0 is reserved so an all-zero header never decodes.
public enum FrameType: UInt16, Sendable, CaseIterable, CustomStringConvertible {
    case hello = 1, deviceData = 2, dirtyBitmap = 3, pages = 4, iterationEnd = 5, deviceEnd = 6
    case complete = 7, ready = 8, commit = 9, resumed = 10, abort = 11, keepAlive = 12
    // Version 2 (§13): session resumption.
    case resume = 13, resumeAccept = 14, refuse = 15, ack = 16
    // Version 3 (§14): several streams.
    case join = 17, joinAccept = 18, streamEnd = 19

    public var description: String {
        switch self {
        case .hello: "HELLO"
        case .deviceData: "DEVICE_DATA"
        case .dirtyBitmap: "DIRTY_BITMAP"
        case .pages: "PAGES"
        case .iterationEnd: "ITERATION_END"
        case .deviceEnd: "DEVICE_END"
        case .complete: "COMPLETE"
        case .ready: "READY"
        case .commit: "COMMIT"
        case .resumed: "RESUMED"
        case .abort: "ABORT"
        case .keepAlive: "KEEPALIVE"
        case .resume: "RESUME"
        case .resumeAccept: "RESUME_ACCEPT"
        case .refuse: "REFUSE"
        case .ack: "ACK"
        case .join: "JOIN"
        case .joinAccept: "JOIN_ACCEPT"
        case .streamEnd: "STREAM_END"
        }
    }

    /// The first version with this frame type; an older decoder does not know the code.
    public var introduced: ProtocolVersion {
        rawValue >= FrameType.join.rawValue ? .v3 : rawValue >= FrameType.resume.rawValue ? .v2 : .v1
    }

    /// Frames that travel in `ResumptionBody`, not `FrameBody`.
    var isResumption: Bool { introduced >= .v2 }

    /// The resume and join handshakes' frames: outside the numbered stream, sequence 0.
    var isHandshake: Bool { [.resume, .resumeAccept, .refuse, .join, .joinAccept].contains(self) }

    /// Frames whose header device field names a device; every other frame carries 0 there.
    var isDeviceSpecific: Bool { self == .deviceData || self == .dirtyBitmap || self == .deviceEnd }

    /// Which role may send this frame.
    func isSent(by role: Role) -> Bool {
        switch self {
        case .hello, .abort, .keepAlive, .resume, .refuse: true
        case .deviceData, .dirtyBitmap, .pages, .iterationEnd, .deviceEnd, .complete, .commit, .join, .streamEnd: role == .source
        case .ready, .resumed, .resumeAccept, .ack, .joinAccept: role == .destination
        }
    }
}

extension FrameBody {
    public var type: FrameType {
        switch self {
        case .hello: .hello
        case .deviceData: .deviceData
        case .dirtyBitmap: .dirtyBitmap
        case .pages: .pages
        case .iterationEnd: .iterationEnd
        case .deviceEnd: .deviceEnd
        case .complete: .complete
        case .ready: .ready
        case .commit: .commit
        case .resumed: .resumed
        case .abort: .abort
        case .keepAlive: .keepAlive
        }
    }
}

/// The fixed 24-byte little-endian frame header:
///
///     0  [4]  magic "VMIG"
///     4  u16  type
///     6  u16  flags (none defined in v1: must be 0)
///     8  u32  device index (0 unless the type is device-specific)
///     12 u32  payload length
///     16 u64  sequence number
struct FrameHeader: Equatable {
    static let size = 24
    static let magic: [UInt8] = Array("VMIG".utf8)
    static let magicValue: UInt32 = 0x4749_4D56  // "VMIG" read little-endian

    var type: FrameType
    var flags: UInt16
    var device: UInt32
    var payloadLength: Int
    var sequence: UInt64

    func write(to w: inout ByteWriter) {
        w.append(FrameHeader.magic)
        w.u16(type.rawValue)
        w.u16(flags)
        w.u32(device)
        w.u32(UInt32(payloadLength))
        w.u64(sequence)
    }

    /// Parses the header at `offset`; the caller guarantees 24 bytes are there.
    /// Checks only what the header itself can be wrong about (magic, type, flags).
    /// A type introduced after `version` is as unknown as any other code.
    static func parse(_ bytes: [UInt8], at offset: Int, version: ProtocolVersion = .v1) throws(WireError) -> FrameHeader {
        precondition(offset + size <= bytes.count)
        let magic = loadLE32(bytes, at: offset)
        guard magic == magicValue else { throw .badFrameMagic(found: magic) }
        let rawType = loadLE16(bytes, at: offset + 4)
        guard let type = FrameType(rawValue: rawType), type.introduced <= version else { throw .unknownFrameType(rawType) }
        let flags = loadLE16(bytes, at: offset + 6)
        guard flags == 0 else { throw .unknownFlags(frame: type, flags: flags) }
        let device = loadLE32(bytes, at: offset + 8)
        let length = Int(loadLE32(bytes, at: offset + 12))
        let sequence = loadLE64(bytes, at: offset + 16)
        return FrameHeader(type: type, flags: flags, device: device, payloadLength: length, sequence: sequence)
    }
}
