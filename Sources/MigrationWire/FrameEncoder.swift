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

/// A frame serialised whole off the writer's lock (on a compression worker):
/// header and payload in one buffer, the header's sequence number left 0 until
/// the writer's `FrameEncoder.number(_:)` patches it in place. The payload is
/// written once, where it will be encrypted from.
public struct PreparedFrame: Sendable {
    /// What the frame says. A PAGES body lists its segments without their payloads
    /// (all a retained window keeps of it is its runs).
    public let body: FrameBody
    public let device: UInt32
    /// Header, then payload; without the raw pages in `borrowed`.
    public fileprivate(set) var bytes: [UInt8]
    /// PAGES: raw segments whose pages the writer sends from the guest mapping, each
    /// in its place in `bytes` (ascending offsets), instead of a copy in the frame.
    public fileprivate(set) var borrowed: [BorrowedPages] = []

    /// The frame's size on the wire, borrowed pages included.
    public var byteCount: Int { borrowed.reduce(bytes.count) { $0 + $1.byteCount } }

    /// The bytes a retained window keeps: PAGES and KEEPALIVE are rebuilt on replay, so only their header;
    /// but PAGES with zstd lane segments are replayed byte for byte (`RetainedWindow.record`), so whole.
    public var retainedBytes: [UInt8] {
        switch body {
        case .pages(let p) where p.hasLaneSegments:
            // A lane batch never borrows (PayloadCompressor.encodePages): its bytes are whole.
            precondition(borrowed.isEmpty, "a PAGES frame with lane segments holds its raw pages")
            // A copy sized to the frame: the builder reserved room for every page raw (1 MiB
            // and more), and a window of retained frames must cost what it counts.
            return Array(bytes[...])
        case .pages, .keepAlive: return Array(bytes[0..<FrameHeader.size])
        default: return bytes
        }
    }
}

/// Raw pages a PAGES frame leaves out of its buffer: `byteCount` bytes of the pages
/// `startPFN..<startPFN+pageCount` go at `offset` of the frame's `bytes`.
public struct BorrowedPages: Sendable, Equatable {
    public let offset: Int
    public let startPFN: UInt64
    public let pageCount: UInt32
    public let byteCount: Int
}

extension FrameEncoder {
    /// Serialises `body` now, to be numbered later (`number(_:)`).
    public static func prepare(_ body: FrameBody, device: UInt32 = 0) throws(WireError) -> PreparedFrame {
        PreparedFrame(body: body, device: device, bytes: try frame(body, device: device, sequence: 0))
    }

    /// Gives `frame` the next sequence number, in place (no copy when the caller owns the only reference).
    public mutating func number(_ frame: inout PreparedFrame) {
        let value = sequence
        frame.bytes.withUnsafeMutableBytes { $0.storeBytes(of: value.littleEndian, toByteOffset: 16, as: UInt64.self) }
        sequence += 1
    }
}

/// Builds one PAGES frame in place (§ PAGES): the header and the page size first,
/// then each segment's header and payload appended straight into the frame's own
/// buffer, raw pages copied once out of the guest mapping. The segment count and
/// the payload length are patched when the frame is finished.
public struct PagesFrameBuilder {
    private var w: ByteWriter
    private var segments: [PageSegment] = []
    private var borrowed: [BorrowedPages] = []
    /// Where the payload of the last segment appended starts in the frame.
    private var lastPayloadStart = 0
    public let pageSize: UInt32
    /// Raw pages are left in the guest mapping for the writer (`appendBorrowedRaw`).
    public let borrowsRawPages: Bool
    /// Shorter raw runs are copied all the same: each borrowed run is a piece of its own
    /// for TLS, and a piece ends a record, so short runs between zero pages (the bench
    /// corpus: three pages on average) made many small records, and `none` on loopback
    /// took 10-30 % longer than copying them (measured A/B, issue 14).
    public static let minimumBorrowedBytes = 64 << 10

    /// Reserves room for `pageCount` raw pages, each its own segment: a frame never regrows.
    /// `borrowingRawPages`: raw segments are sent from the guest mapping (one copy fewer).
    public init(pageSize: Int, pageCount: Int, borrowingRawPages: Bool = false) {
        self.pageSize = UInt32(pageSize)
        borrowsRawPages = borrowingRawPages
        w = ByteWriter(capacity: FrameHeader.size + 8 + pageCount * (PageSegment.headerSize + pageSize))
        FrameHeader(type: .pages, flags: 0, device: 0, payloadLength: 0, sequence: 0).write(to: &w)
        w.u32(self.pageSize)
        w.u32(0)  // segment count, patched by `finish`
    }

    /// `lane`: a `zstdLane` segment's lane (§15); 0 for every other encoding.
    public mutating func append(startPFN: UInt64, pageCount: UInt32, encoding: PageEncoding, payload: [UInt8], lane: UInt8 = 0) {
        segmentHeader(startPFN: startPFN, pageCount: pageCount, encoding: encoding, length: payload.count, lane: lane)
        w.append(payload)
    }

    /// A raw segment copied straight from `pages` (whole pages of the guest mapping).
    public mutating func appendRaw(startPFN: UInt64, pageCount: UInt32, pages: RawSpan) {
        segmentHeader(startPFN: startPFN, pageCount: pageCount, encoding: .raw, length: pages.byteCount)
        w.append(pages)
    }

    /// The fingerprints of the pages of the segment just appended, from its payload in
    /// the frame: exactly the bytes that go out (page copies, §17).
    public func fingerprintLastPayload(pageSize: Int, _ fingerprinter: PageFingerprinter) -> [(print: PageFingerprint, sketch: UInt32)] {
        let payload = w.bytes.span.bytes.extracting(lastPayloadStart..<w.bytes.count)
        var prints: [(print: PageFingerprint, sketch: UInt32)] = []
        for p in 0..<(payload.byteCount / pageSize) {
            prints.append(fingerprinter.identify(payload.extracting((p * pageSize)..<((p + 1) * pageSize))))
        }
        return prints
    }

    /// A raw segment of `byteCount` bytes whose pages stay in the guest mapping: the
    /// writer sends them there, from where the guest keeps them (PreparedFrame.borrowed).
    public mutating func appendBorrowedRaw(startPFN: UInt64, pageCount: UInt32, byteCount: Int) {
        segmentHeader(startPFN: startPFN, pageCount: pageCount, encoding: .raw, length: byteCount)
        borrowed.append(BorrowedPages(offset: w.bytes.count, startPFN: startPFN, pageCount: pageCount, byteCount: byteCount))
    }

    private mutating func segmentHeader(startPFN: UInt64, pageCount: UInt32, encoding: PageEncoding, length: Int, lane: UInt8 = 0) {
        segments.append(PageSegment(startPFN: startPFN, pageCount: pageCount, encoding: encoding, payload: [], lane: lane))
        w.u64(startPFN); w.u32(pageCount); w.u8(encoding.rawValue); w.u8(lane); w.zeros(2)
        w.u32(UInt32(length))
        lastPayloadStart = w.bytes.count
    }

    /// The finished frame, unnumbered; the builder is left empty. (Mutating, not
    /// consuming: patching a buffer the caller's variable still referenced would copy it.)
    public mutating func finish() throws(WireError) -> PreparedFrame {
        let length = borrowed.reduce(w.bytes.count - FrameHeader.size) { $0 + $1.byteCount }
        guard let encoded = UInt32(exactly: length) else {
            throw .sizeNotRepresentable(what: "PAGES payload", bytes: UInt64(length), limit: UInt64(UInt32.max))
        }
        w.patchU32(encoded, at: 12)
        w.patchU32(UInt32(segments.count), at: FrameHeader.size + 4)
        var frame = PreparedFrame(body: .pages(Pages(pageSize: pageSize, segments: segments)), device: 0, bytes: w.take())
        frame.borrowed = borrowed
        borrowed = []
        return frame
    }
}
