// Payload layouts of every frame but HELLO (see Hello.swift). Offsets are relative
// to the payload; all integers little-endian. docs/PROTOCOL.md is the normative copy.
//
// Parsing checks structure and limits only; session rules (order, device indices,
// announced memory and encodings) are FrameDecoder's job.

extension FrameBody {
    func writePayload(to w: inout ByteWriter) {
        switch self {
        case .hello(let h): h.write(to: &w)
        case .deviceData(let d): d.write(to: &w)
        case .dirtyBitmap(let b): b.write(to: &w)
        case .pages(let p): p.write(to: &w)
        case .iterationEnd(let i):
            w.u32(i.iteration); w.u32(0); w.u64(i.pendingBytes); w.u64(i.dirtyPages)
        case .deviceEnd(let e):
            precondition(e.sha256.count == DeviceEnd.digestSize, "DEVICE_END digest must be 32 bytes")
            w.u64(e.totalBytes); w.u64(e.chunkCount); w.append(e.sha256)
        case .abort(let a): a.write(to: &w)
        case .complete, .ready, .commit, .resumed, .keepAlive: break
        }
    }

    /// Size hint so encoding a large chunk does not regrow the buffer.
    var payloadSizeHint: Int {
        switch self {
        case .deviceData(let d): 16 + d.payload.count
        case .dirtyBitmap(let b): if case .bitmap(let bits) = b.copied { 32 + bits.count } else { 32 }
        case .pages(let p): p.segments.reduce(8) { $0 + PageSegment.headerSize + $1.payload.count }
        default: 64
        }
    }

    static func parsePayload(_ type: FrameType, _ r: inout ByteReader, limits: WireLimits,
                             version: ProtocolVersion = .v1) throws(WireError) -> FrameBody {
        switch type {
        case .hello: return .hello(try Hello.parse(&r, limits: limits, version: version))
        case .deviceData: return .deviceData(try DeviceData.parse(&r, limits: limits))
        case .dirtyBitmap: return .dirtyBitmap(try DirtyBitmap.parse(&r, limits: limits))
        case .pages: return .pages(try Pages.parse(&r, limits: limits))
        case .iterationEnd:
            try fixedLength(type, r, 24)
            let iteration = try r.u32("iteration")
            try r.reserved(4, "reserved")
            let pending = try r.u64("pending bytes")
            let dirty = try r.u64("dirty pages")
            return .iterationEnd(IterationEnd(iteration: iteration, pendingBytes: pending, dirtyPages: dirty))
        case .deviceEnd:
            try fixedLength(type, r, 16 + DeviceEnd.digestSize)
            let total = try r.u64("total bytes")
            let chunks = try r.u64("chunk count")
            let digest = try r.bytes(DeviceEnd.digestSize, "sha256")
            return .deviceEnd(DeviceEnd(totalBytes: total, chunkCount: chunks, sha256: digest))
        case .abort: return .abort(try Abort.parse(&r))
        case .complete: try fixedLength(type, r, 0); return .complete
        case .ready: try fixedLength(type, r, 0); return .ready
        case .commit: try fixedLength(type, r, 0); return .commit
        case .resumed: try fixedLength(type, r, 0); return .resumed
        case .keepAlive: try fixedLength(type, r, 0); return .keepAlive
        case .resume, .resumeAccept, .refuse, .ack, .join, .joinAccept, .streamEnd: preconditionFailure("\(type) is a resumption frame (ResumptionBody)")
        }
    }

    private static func fixedLength(_ type: FrameType, _ r: ByteReader, _ n: Int) throws(WireError) {
        guard r.remaining == n else { throw .invalidPayloadLength(frame: type, expected: n, actual: r.remaining) }
    }
}

/// DEVICE_DATA: 0 u8 phase, 1 u8 encoding, 2 u8 part (0 whole, 1 first, 2 next),
/// 3 u8 reserved, 4 u32 original length, [first only: 8 u64 chunk length], then data.
extension DeviceData {
    func write(to w: inout ByteWriter) {
        w.u8(phase.rawValue); w.u8(encoding.rawValue)
        switch part {
        case .whole: w.u8(0); w.u8(0); w.u32(originalLength)
        case .first(let chunkLength): w.u8(1); w.u8(0); w.u32(originalLength); w.u64(chunkLength)
        case .next: w.u8(2); w.u8(0); w.u32(originalLength)
        }
        w.append(payload)
    }

    static func parse(_ r: inout ByteReader, limits: WireLimits) throws(WireError) -> DeviceData {
        let rawPhase = try r.u8("phase")
        guard let phase = Phase(rawValue: rawPhase) else { throw .invalidValue(frame: .deviceData, field: "phase", value: UInt64(rawPhase)) }
        let rawEncoding = try r.u8("encoding")
        guard let encoding = Encoding(rawValue: rawEncoding) else { throw .unknownEncoding(frame: .deviceData, value: rawEncoding) }
        guard encoding.carriesDeviceData else { throw DeviceData.refused(encoding) }
        let rawPart = try r.u8("part")
        try r.reserved(1, "reserved")
        let original = try r.u32("original length")
        let part = try parsePart(rawPart, original: original, &r)
        switch encoding {
        case .raw:
            guard r.remaining == Int(original) else {
                throw .payloadSizeMismatch(frame: .deviceData, field: "raw data", expected: Int(original), actual: r.remaining)
            }
        case .deflate, .zstd, .zstdLanes, .xxh3Digest, .pageCopies:
            guard Int(original) <= limits.maxInflated else {
                throw .inflatedTooLarge(frame: .deviceData, declared: Int(original), limit: limits.maxInflated)
            }
        }
        let data = try r.slice(r.remaining, "data")
        return DeviceData(phase: phase, encoding: encoding, originalLength: original, payload: data, part: part)
    }

    /// zstd lanes and page copies are for PAGES segments only (§15, §17) and encoding 4
    /// names DEVICE_END's digest (§16): DEVICE_DATA with encoding 3, 4 or 5 is refused.
    static func refused(_ encoding: Encoding) -> WireError {
        let why = switch encoding {
        case .zstdLanes: "3, zstd lanes, is for PAGES segments only"
        case .pageCopies: "5, page copies, is for PAGES segments only"
        default: "4 names the DEVICE_END digest, not a payload encoding"
        }
        return .invalidValue(frame: .deviceData, field: "encoding (\(why))", value: UInt64(encoding.rawValue))
    }

    /// A piece carries at least one byte, and a first piece less than its chunk
    /// (a chunk that fits one frame is sent whole): one encoding per chunk size.
    private static func parsePart(_ raw: UInt8, original: UInt32, _ r: inout ByteReader) throws(WireError) -> ChunkPart {
        switch raw {
        case 0: return .whole
        case 1, 2:
            guard original > 0 else { throw .invalidValue(frame: .deviceData, field: "original length of a piece", value: 0) }
            guard raw == 1 else { return .next }
            let chunkLength = try r.u64("chunk length")
            guard chunkLength > UInt64(original) else {
                throw .invalidValue(frame: .deviceData, field: "chunk length (must exceed the first piece)", value: chunkLength)
            }
            return .first(chunkLength: chunkLength)
        default: throw .invalidValue(frame: .deviceData, field: "part", value: UInt64(raw))
        }
    }
}

/// DIRTY_BITMAP: 0 u64 start PFN, 8 u64 page size, 16 u64 total PFNs,
/// 24 u8 copied (0 NONE, 1 ALL, 2 BITMAP), 25 [7] reserved, 32 bitmap (BITMAP only).
extension DirtyBitmap {
    /// Payload bytes before the bitmap.
    public static let headerSize = 32

    func write(to w: inout ByteWriter) {
        w.u64(startPFN); w.u64(pageSize); w.u64(totalPFNs)
        switch copied {
        case .none: w.u8(0); w.zeros(7)
        case .all: w.u8(1); w.zeros(7)
        case .bitmap(let bits): w.u8(2); w.zeros(7); w.append(bits)
        }
    }

    static func parse(_ r: inout ByteReader, limits: WireLimits) throws(WireError) -> DirtyBitmap {
        let start = try r.u64("start PFN")
        let pageSize = try r.u64("page size")
        let total = try r.u64("total PFNs")
        let kind = try r.u8("copied")
        try r.reserved(7, "reserved")
        guard isValidPageSize(pageSize) else { throw .invalidPageSize(frame: .dirtyBitmap, pageSize: pageSize) }
        guard total <= limits.maxPFNsPerFrame else { throw .tooManyPFNs(frame: .dirtyBitmap, count: total, limit: limits.maxPFNsPerFrame) }
        guard !start.addingReportingOverflow(total).overflow else {
            throw .pfnOutsideMemory(frame: .dirtyBitmap, startPFN: start, count: total)
        }
        let copied: DirtyCopied
        switch kind {
        case 0: try r.expectEnd(); copied = .none
        case 1: try r.expectEnd(); copied = .all
        case 2:
            let expected = Int((total + 7) / 8)
            guard r.remaining == expected else { throw .bitmapLengthMismatch(totalPFNs: total, expected: expected, actual: r.remaining) }
            copied = .bitmap(try r.bytes(expected, "bitmap"))
        default: throw .invalidValue(frame: .dirtyBitmap, field: "copied", value: UInt64(kind))
        }
        return DirtyBitmap(startPFN: start, pageSize: pageSize, totalPFNs: total, copied: copied)
    }
}

/// PAGES: 0 u32 page size, 4 u32 segment count N, 8 N × segment.
/// Segment: 0 u64 start PFN, 8 u32 page count, 12 u8 encoding (0 zero, 1 raw, 2 deflate, 3 zstd,
/// 4 zstd lane), 13 u8 lane (encoding 4; reserved otherwise), 14 [2] reserved, 16 u32 payload length, 20 payload.
extension PageSegment {
    static let headerSize = 20
}

extension Pages {
    /// Whether a segment continues a zstd lane (§15): such a frame is replayed as its bytes.
    public var hasLaneSegments: Bool { segments.contains { $0.encoding == .zstdLane } }

    func write(to w: inout ByteWriter) {
        w.u32(pageSize)
        w.u32(UInt32(segments.count))
        for s in segments {
            // The lane is written as given, so a test can build the hostile frame with one on another encoding.
            w.u64(s.startPFN); w.u32(s.pageCount); w.u8(s.encoding.rawValue); w.u8(s.lane); w.zeros(2)
            w.u32(UInt32(s.payload.count)); w.append(s.payload)
        }
    }

    static func parse(_ r: inout ByteReader, limits: WireLimits) throws(WireError) -> Pages {
        let pageSize = try r.u32("page size")
        guard isValidPageSize(UInt64(pageSize)) else { throw .invalidPageSize(frame: .pages, pageSize: UInt64(pageSize)) }
        let count = Int(try r.u32("segment count"))
        // Each segment needs at least its header: bounds the array before reserving it.
        guard count * PageSegment.headerSize <= r.remaining else {
            throw .countExceedsPayload(frame: .pages, field: "segment count", count: UInt64(count), remainingBytes: r.remaining)
        }
        var segments: [PageSegment] = []
        segments.reserveCapacity(count)
        var totalPFNs: UInt64 = 0
        for _ in 0..<count {
            let start = try r.u64("segment start PFN")
            let pages = try r.u32("segment page count")
            let rawEncoding = try r.u8("segment encoding")
            let lane = try r.u8("segment lane")
            try r.reserved(2, "segment reserved")
            let length = Int(try r.u32("segment payload length"))
            guard pages > 0 else { throw .invalidValue(frame: .pages, field: "segment page count", value: 0) }
            guard let encoding = PageEncoding(rawValue: rawEncoding) else { throw .unknownEncoding(frame: .pages, value: rawEncoding) }
            // Byte 13 is reserved for every encoding but the lane's (reported as it was before version 4).
            guard encoding == .zstdLane || lane == 0 else { throw .invalidValue(frame: .pages, field: "segment reserved", value: UInt64(lane)) }
            totalPFNs += UInt64(pages)  // ≤ 2^32 segments × 2^32 pages: cannot overflow
            guard totalPFNs <= limits.maxPFNsPerFrame else { throw .tooManyPFNs(frame: .pages, count: totalPFNs, limit: limits.maxPFNsPerFrame) }
            guard !start.addingReportingOverflow(UInt64(pages)).overflow else {
                throw .pfnOutsideMemory(frame: .pages, startPFN: start, count: UInt64(pages))
            }
            let decodedSize = UInt64(pages) * UInt64(pageSize)  // < 2^64
            switch encoding {
            case .zero:
                guard length == 0 else { throw .payloadSizeMismatch(frame: .pages, field: "zero segment payload", expected: 0, actual: length) }
            case .raw:
                guard UInt64(length) == decodedSize else {
                    throw .payloadSizeMismatch(frame: .pages, field: "raw segment payload", expected: Int(clamping: decodedSize), actual: length)
                }
            case .deflate, .zstd, .zstdLane:
                guard decodedSize <= UInt64(limits.maxInflated) else {
                    throw .inflatedTooLarge(frame: .pages, declared: Int(clamping: decodedSize), limit: limits.maxInflated)
                }
            case .copy:
                guard length == 8 else { throw .payloadSizeMismatch(frame: .pages, field: "copy segment payload", expected: 8, actual: length) }
            }
            let payload = try r.slice(length, "segment payload")
            segments.append(PageSegment(startPFN: start, pageCount: pages, encoding: encoding, payload: payload, lane: lane))
        }
        try r.expectEnd()
        return Pages(pageSize: pageSize, segments: segments)
    }
}

extension DeviceEnd {
    static let digestSize = 32
}

/// ABORT: 0 u16 reason, 2 u16 text length, 4 text (UTF-8; a receiver shows it even if malformed).
extension Abort {
    /// Senders cut the text here (at a character boundary); enough for an operator.
    static let maxMessageBytes = 1024

    func write(to w: inout ByteWriter) {
        let text = Abort.operatorText(message)
        w.u16(reason.rawValue); w.u16(UInt16(text.count)); w.append(text)
    }

    /// The message as sent: UTF-8, cut at a character boundary within `maxMessageBytes`.
    static func operatorText(_ message: String) -> [UInt8] {
        var text: [UInt8] = []
        for scalar in message.unicodeScalars {
            let encoded = Array(String(scalar).utf8)
            if text.count + encoded.count > Abort.maxMessageBytes { break }
            text += encoded
        }
        return text
    }

    static func parse(_ r: inout ByteReader) throws(WireError) -> Abort {
        let rawReason = try r.u16("reason")
        let length = Int(try r.u16("text length"))
        let text = try r.bytes(length, "text")
        try r.expectEnd()
        // Unknown reasons from a newer peer still abort: read them as unspecified.
        return Abort(reason: AbortReason(rawValue: rawReason) ?? .unspecified, message: String(decoding: text, as: UTF8.self))
    }
}
