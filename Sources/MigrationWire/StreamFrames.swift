// Version 3: one session over several TLS streams (docs/PROTOCOL.md §14). The
// join handshake reuses §13's: the destination greets every new connection of a
// session with RESUME, and a source answers with JOIN instead of RESUME to add
// the connection as stream k. STREAM_END closes an extra stream.

/// JOIN: 0 [16] session id, 16 u32 stream index (1…count−1), 20 u32 reserved, 24 [32] proof.
public struct Join: Sendable, Equatable {
    public var sessionID: [UInt8]
    public var streamIndex: UInt32
    /// `ResumeProof.computeJoin` for this session, this index and this connection.
    public var proof: [UInt8]
    public init(sessionID: [UInt8], streamIndex: UInt32, proof: [UInt8]) {
        self.sessionID = sessionID; self.streamIndex = streamIndex; self.proof = proof
    }
    static let payloadSize = 56

    func write(to w: inout ByteWriter) {
        precondition(sessionID.count == Hello.sessionIDSize && proof.count == ResumeProof.size, "JOIN: 16-byte session id, 32-byte proof")
        w.append(sessionID); w.u32(streamIndex); w.u32(0); w.append(proof)
    }
}

/// JOIN_ACCEPT: 0 u32 stream index (the JOIN's), 4 u32 reserved.
public struct JoinAccept: Sendable, Equatable {
    public var streamIndex: UInt32
    public init(streamIndex: UInt32) { self.streamIndex = streamIndex }
    static let payloadSize = 8
}

/// STREAM_END: 0 u32 stream index, 4 u32 reserved, 8 u64 frame count: the numbered
/// frames the stream carried before this one, which is also its own sequence number.
public struct StreamEnd: Sendable, Equatable {
    public var streamIndex: UInt32
    public var frameCount: UInt64
    public init(streamIndex: UInt32, frameCount: UInt64) { self.streamIndex = streamIndex; self.frameCount = frameCount }
    static let payloadSize = 16
}

extension ResumptionBody {
    static func parseStreamFrame(_ type: FrameType, _ r: inout ByteReader) throws(WireError) -> ResumptionBody {
        let expected = switch type { case .join: Join.payloadSize; case .joinAccept: JoinAccept.payloadSize; default: StreamEnd.payloadSize }
        guard r.remaining == expected else { throw .invalidPayloadLength(frame: type, expected: expected, actual: r.remaining) }
        switch type {
        case .join:
            let session = try r.bytes(Hello.sessionIDSize, "session id")
            let index = try r.u32("stream index")
            try r.reserved(4, "reserved")
            let proof = try r.bytes(ResumeProof.size, "proof")
            guard index > 0 else { throw .invalidValue(frame: type, field: "stream index (0 is the session's first connection)", value: 0) }
            return .join(Join(sessionID: session, streamIndex: index, proof: proof))
        case .joinAccept:
            let index = try r.u32("stream index")
            try r.reserved(4, "reserved")
            guard index > 0 else { throw .invalidValue(frame: type, field: "stream index", value: 0) }
            return .joinAccept(JoinAccept(streamIndex: index))
        default:
            let index = try r.u32("stream index")
            try r.reserved(4, "reserved")
            let count = try r.u64("frame count")
            guard index > 0 else { throw .invalidValue(frame: type, field: "stream index", value: 0) }
            return .streamEnd(StreamEnd(streamIndex: index, frameCount: count))
        }
    }
}

/// Which stream carries a guest page (§14.4): PFNs in blocks of `blockPages`,
/// the blocks dealt round-robin over the `count` streams. Every frame of one PFN
/// then travels on one stream, in that stream's order, so its last write wins
/// without any order across streams.
public struct StreamRouting: Sendable, Equatable {
    public let count: Int
    public let blockPages: UInt64

    public init(count: Int, blockPages: UInt64) {
        precondition(count >= 1 && blockPages >= 1, "at least one stream and one page per block")
        self.count = count; self.blockPages = blockPages
    }

    public init(_ offer: StreamOffer) { self.init(count: Int(offer.count), blockPages: UInt64(offer.blockPages)) }

    /// The stream that owns `pfn`.
    public func stream(of pfn: UInt64) -> Int { Int((pfn / blockPages) % UInt64(count)) }

    /// `start..<start+pages` cut at block boundaries, each piece with its stream.
    public func pieces(start: UInt64, pages: UInt64) -> [(stream: Int, start: UInt64, pages: UInt64)] {
        var out: [(stream: Int, start: UInt64, pages: UInt64)] = []
        var pfn = start
        let end = start + pages
        while pfn < end {
            let n = min(nextBlock(after: pfn), end) - pfn
            out.append((stream(of: pfn), pfn, n))
            pfn += n
        }
        return out
    }

    /// The first PFN of `start..<start+pages` that `stream` does not own, nil when it owns all.
    public func firstForeignPFN(stream index: Int, start: UInt64, pages: UInt64) -> UInt64? {
        guard count > 1 else { return nil }
        var pfn = start
        let end = start + pages
        while pfn < end {
            if stream(of: pfn) != index { return pfn }
            pfn = nextBlock(after: pfn)
        }
        return nil
    }

    /// The first PFN of the block after `pfn`'s (UInt64.max past the last block).
    private func nextBlock(after pfn: UInt64) -> UInt64 {
        let (next, overflow) = (pfn - pfn % blockPages).addingReportingOverflow(blockPages)
        return overflow ? .max : next
    }
}
