// The frame model: what the encoder serialises and the decoder produces.
// Byte layouts are in docs/PROTOCOL.md; limits are in WireLimits.

public struct WireLimits: Sendable, Equatable {
    public var maxPayload: Int
    public var maxInflated: Int
    public var maxDevices: Int
    public var maxPFNsPerFrame: UInt64
    public init(maxPayload: Int = 16 << 20, maxInflated: Int = 16 << 20, maxDevices: Int = 64,
                maxPFNsPerFrame: UInt64 = 1 << 24) {
        self.maxPayload = maxPayload; self.maxInflated = maxInflated
        self.maxDevices = maxDevices; self.maxPFNsPerFrame = maxPFNsPerFrame
    }
    public static let `default` = WireLimits()
}

public enum Role: UInt8, Sendable { case source = 1, destination = 2 }
public enum Phase: UInt8, Sendable { case precopy = 0, stopcopy = 1 }
/// Payload encodings. `raw` and `deflate` (zlib raw deflate) are mandatory;
/// `zstd` is used only when both HELLOs list it (PROTOCOL.md §9). `zstdLanes`
/// (version 4, §15) permits PAGES segments that continue a zstd stream per lane;
/// DEVICE_DATA never uses it.
public enum Encoding: UInt8, Sendable, CaseIterable {
    case raw = 0, deflate = 1, zstd = 2, zstdLanes = 3
    /// Not a payload encoding: listed in both HELLOs, DEVICE_END carries XXH3-128
    /// instead of SHA-256 (§16). No DEVICE_DATA frame or PAGES segment uses it.
    case xxh3Digest = 4
    /// PAGES segments may say "the same bytes as pages the destination holds" (§17).
    case pageCopies = 5

    /// Whether a DEVICE_DATA payload may use it (lanes and page copies are for PAGES
    /// segments, the digest for DEVICE_END).
    public var carriesDeviceData: Bool { self != .zstdLanes && self != .xxh3Digest && self != .pageCopies }

    /// The protocol version that defines the encoding: a HELLO of an older version
    /// never lists it (§10), so a version-1 peer never meets zstd.
    public var introduced: ProtocolVersion {
        switch self {
        case .raw, .deflate: .v1
        case .zstd: .v2
        case .zstdLanes: .v4
        case .xxh3Digest: .v5
        case .pageCopies: .v6
        }
    }
}
/// `zstdLane`: the segment's payload is the next bytes of its lane's zstd stream (§15).
/// `copy`: the pages take the bytes the destination holds at other PFNs (§17); the
/// payload is the first of those PFNs.
public enum PageEncoding: UInt8, Sendable { case zero = 0, raw = 1, deflate = 2, zstd = 3, zstdLane = 4, copy = 5 }

extension PageEncoding {
    /// The HELLO encoding a segment of this kind needs announced (nil: always permitted).
    public var announcedAs: Encoding? {
        switch self {
        case .zero, .raw: nil
        case .deflate: .deflate
        case .zstd: .zstd
        case .zstdLane: .zstdLanes
        case .copy: .pageCopies
        }
    }
}

public struct DeviceDescriptor: Sendable, Equatable {
    public var name: String
    public var pageSize: UInt32
    public var compatibility: String
    public init(name: String, pageSize: UInt32, compatibility: String) {
        self.name = name; self.pageSize = pageSize; self.compatibility = compatibility
    }
}

public struct MemoryRange: Sendable, Equatable {
    public var startPFN: UInt64
    public var pageCount: UInt64
    public var pageSize: UInt32
    public init(startPFN: UInt64, pageCount: UInt64, pageSize: UInt32) {
        self.startPFN = startPFN; self.pageCount = pageCount; self.pageSize = pageSize
    }
}

public struct Hello: Sendable, Equatable {
    public static let currentVersion: UInt16 = 1
    public var version: UInt16
    public var sessionID: [UInt8]          // 16 bytes
    public var role: Role
    /// Destination: encodings it accepts. Source: the subset it will use.
    public var encodings: [Encoding]
    public var devices: [DeviceDescriptor]
    public var memory: [MemoryRange]
    /// Version 3 only (§14.2), nil in every other version: the destination's
    /// maximum, the source's count and how it spreads pages over them.
    public var streams: StreamOffer?
    public init(version: UInt16 = Hello.currentVersion, sessionID: [UInt8], role: Role, encodings: [Encoding],
                devices: [DeviceDescriptor], memory: [MemoryRange], streams: StreamOffer? = nil) {
        self.version = version; self.sessionID = sessionID; self.role = role
        self.encodings = encodings; self.devices = devices; self.memory = memory; self.streams = streams
    }
}

/// The HELLO tail of version 3 (§14.2). Destination: `count` is the most streams
/// it accepts, `blockPages` 0. Source: the streams it opens (1…the destination's
/// count) and the block size of the page routing (`StreamRouting`), ≥ 1.
/// Version 4 adds `lanes` (0 in version 3, where the field is reserved): the
/// destination's most zstd lanes it decodes in the session (0: none), the source's
/// lanes in the session (over all streams); both at most `maxLanes`.
public struct StreamOffer: Sendable, Equatable {
    public var count: UInt16
    public var blockPages: UInt32
    public var lanes: UInt16
    public static let maxLanes: UInt16 = 16
    public init(count: UInt16, blockPages: UInt32, lanes: UInt16 = 0) {
        self.count = count; self.blockPages = blockPages; self.lanes = lanes
    }
}

/// Where a DEVICE_DATA frame's bytes sit in the device's chunk (a chunk larger
/// than a frame travels as a first piece and continuations; PROTOCOL.md §5.2).
public enum ChunkPart: Sendable, Equatable {
    /// The frame carries one whole chunk.
    case whole
    /// The first piece of a chunk of `chunkLength` bytes; continuations follow
    /// until their lengths add up to it.
    case first(chunkLength: UInt64)
    /// The next piece of the device's open chunk.
    case next
}

public struct DeviceData: Sendable, Equatable {
    public var phase: Phase
    public var encoding: Encoding
    /// This frame's bytes before encoding (the whole chunk, or this piece of it).
    public var originalLength: UInt32
    /// A decoded frame's payload is a view of the receive buffer (no copy).
    public var payload: ArraySlice<UInt8>
    public var part: ChunkPart
    public init(phase: Phase, encoding: Encoding, originalLength: UInt32, payload: ArraySlice<UInt8>, part: ChunkPart = .whole) {
        self.phase = phase; self.encoding = encoding; self.originalLength = originalLength; self.payload = payload
        self.part = part
    }
    public init(phase: Phase, encoding: Encoding, originalLength: UInt32, payload: [UInt8], part: ChunkPart = .whole) {
        self.init(phase: phase, encoding: encoding, originalLength: originalLength, payload: payload[...], part: part)
    }
}

public enum DirtyCopied: Sendable, Equatable {
    case none
    case all
    /// ceil(totalPFNs/8) bytes, LSB first.
    case bitmap([UInt8])
}

public struct DirtyBitmap: Sendable, Equatable {
    public var startPFN: UInt64
    public var pageSize: UInt64
    public var totalPFNs: UInt64
    public var copied: DirtyCopied
    public init(startPFN: UInt64, pageSize: UInt64, totalPFNs: UInt64, copied: DirtyCopied) {
        self.startPFN = startPFN; self.pageSize = pageSize; self.totalPFNs = totalPFNs; self.copied = copied
    }
}

/// A run of consecutive pages sharing one encoding. zero: empty payload;
/// raw: pageCount*pageSize bytes; deflate, zstd, zstdLane: decode to pageCount*pageSize bytes.
public struct PageSegment: Sendable, Equatable {
    public var startPFN: UInt64
    public var pageCount: UInt32
    public var encoding: PageEncoding
    /// A decoded frame's payload is a view of the receive buffer (no copy).
    public var payload: ArraySlice<UInt8>
    /// The zstd lane of a `zstdLane` segment (§15); 0 for every other encoding.
    public var lane: UInt8
    public init(startPFN: UInt64, pageCount: UInt32, encoding: PageEncoding, payload: ArraySlice<UInt8>, lane: UInt8 = 0) {
        self.startPFN = startPFN; self.pageCount = pageCount; self.encoding = encoding; self.payload = payload; self.lane = lane
    }
    public init(startPFN: UInt64, pageCount: UInt32, encoding: PageEncoding, payload: [UInt8], lane: UInt8 = 0) {
        self.init(startPFN: startPFN, pageCount: pageCount, encoding: encoding, payload: payload[...], lane: lane)
    }

    /// A `copy` segment (§17): pages `startPFN…` take the bytes the destination holds at `sourcePFN…`.
    public static func copy(startPFN: UInt64, pageCount: UInt32, from sourcePFN: UInt64) -> PageSegment {
        let payload = (0..<8).map { UInt8(truncatingIfNeeded: sourcePFN >> (8 * UInt64($0))) }  // u64, little-endian
        return PageSegment(startPFN: startPFN, pageCount: pageCount, encoding: .copy, payload: payload)
    }

    /// The first source PFN of a `copy` segment (its 8-byte payload, checked by the parser).
    public var copySourcePFN: UInt64? {
        guard encoding == .copy, payload.count == 8 else { return nil }
        return payload.reversed().reduce(0) { ($0 << 8) | UInt64($1) }
    }
}

public struct Pages: Sendable, Equatable {
    public var pageSize: UInt32
    public var segments: [PageSegment]
    public init(pageSize: UInt32, segments: [PageSegment]) { self.pageSize = pageSize; self.segments = segments }
}

public struct IterationEnd: Sendable, Equatable {
    public var iteration: UInt32
    public var pendingBytes: UInt64
    public var dirtyPages: UInt64
    public init(iteration: UInt32, pendingBytes: UInt64, dirtyPages: UInt64) {
        self.iteration = iteration; self.pendingBytes = pendingBytes; self.dirtyPages = dirtyPages
    }
}

public struct DeviceEnd: Sendable, Equatable {
    public var totalBytes: UInt64
    public var chunkCount: UInt64
    public var sha256: [UInt8]             // 32 bytes
    public init(totalBytes: UInt64, chunkCount: UInt64, sha256: [UInt8]) {
        self.totalBytes = totalBytes; self.chunkCount = chunkCount; self.sha256 = sha256
    }
}

public enum AbortReason: UInt16, Sendable {
    case unspecified = 0, incompatible = 1, protocolError = 2, deviceError = 3, digestMismatch = 4
    case cancelled = 5, timeout = 6, internalError = 7
}

public struct Abort: Sendable, Equatable {
    public var reason: AbortReason
    public var message: String
    public init(reason: AbortReason, message: String) { self.reason = reason; self.message = message }
}

public enum FrameBody: Sendable, Equatable {
    case hello(Hello)
    case deviceData(DeviceData)
    case dirtyBitmap(DirtyBitmap)
    case pages(Pages)
    case iterationEnd(IterationEnd)
    case deviceEnd(DeviceEnd)
    case complete
    case ready
    case commit
    case resumed
    case abort(Abort)
    case keepAlive
}

public struct Frame: Sendable, Equatable {
    public var device: UInt32              // device index; 0 where not device-specific
    public var sequence: UInt64
    public var body: FrameBody
    public init(device: UInt32 = 0, sequence: UInt64, body: FrameBody) {
        self.device = device; self.sequence = sequence; self.body = body
    }
}
