import Testing
@testable import MigrationEngine
import MigrationWire

/// The lanes of a session (PROTOCOL.md §15.2): L counts every stream's lanes. The source
/// gives each stream one per compressing thread, the first streams first, all within L;
/// the destination admits at most L (stream, lane) decoders over the session.
@Suite struct ZstdLaneBudgetTests {
    func encoding(lanes: Int) -> SendEncoding {
        SendEncoding(policy: .zstd(level: 3), destinationAccepts: [.raw, .deflate, .zstd, .zstdLanes], workers: 8, lanes: lanes)
    }

    @Test func theFirstStreamsTakeTheSessionsLanes() {
        #expect((0..<4).map { encoding(lanes: 4).lanes(stream: $0, workers: 2) } == [2, 2, 0, 0])
        #expect((0..<3).map { encoding(lanes: 3).lanes(stream: $0, workers: 2) } == [2, 1, 0])
        #expect((0..<2).map { encoding(lanes: 4).lanes(stream: $0, workers: 8) } == [4, 0])
        #expect((0..<6).map { encoding(lanes: 4).lanes(stream: $0, workers: 1) } == [1, 1, 1, 1, 0, 0])
        #expect(encoding(lanes: 0).lanes(stream: 0, workers: 2) == 0)
    }

    @Test func aWorkerPastItsStreamsLanesHasNone() throws {
        let e = encoding(lanes: 4)
        #expect(try e.makeLane(index: 1, stream: 1, workers: 2)?.index == 1)
        #expect(try e.makeLane(index: 2, stream: 0, workers: 4)?.index == 2)
        #expect(try e.makeLane(index: 2, stream: 0, workers: 2) == nil)
        #expect(try e.makeLane(index: 0, stream: 2, workers: 2) == nil)
    }

    /// Two streams of a session with L = 2: the first starts lanes 0 and 1; a lane the
    /// second starts is refused (naming the session's count), the first's go on.
    @Test func theDestinationAdmitsTheSessionsLanesOverAllStreams() throws {
        let budget = SessionLanes(limit: 2)
        let first = PageDecoderSlot(limits: .default, budget: budget), second = PageDecoderSlot(limits: .default, budget: budget)
        var page = [UInt8](repeating: 0, count: 4096)
        func decode(_ slot: PageDecoderSlot, lane: UInt8, startsFrame: Bool = true) throws(WireError) {
            let payload = ProtocolDocTestsLane.payload(startsFrame: startsFrame)
            let segment = PageSegment(startPFN: 0, pageCount: 1, encoding: .zstdLane, payload: payload, lane: lane)
            try page.withUnsafeMutableBufferPointer { (b: inout UnsafeMutableBufferPointer<UInt8>) throws(WireError) in
                var span = b.mutableSpan
                try slot.decode(segment, pageSize: 4096, into: &span)
            }
        }
        try decode(first, lane: 0)
        try decode(first, lane: 1)
        try decode(first, lane: 0, startsFrame: false)
        #expect(page == [UInt8](repeating: 0xab, count: 4096))
        #expect(throws: WireError.lanesExhausted(frame: .pages, lane: 0, lanes: 2)) { try decode(second, lane: 0) }
        try decode(first, lane: 1, startsFrame: false)
    }
}

/// A one-page lane payload (PROTOCOL.md §15.6): the frame header when it starts the
/// lane's frame, then an RLE block of 4096 × `ab` that does not end the frame.
enum ProtocolDocTestsLane {
    static func payload(startsFrame: Bool) -> [UInt8] {
        (startsFrame ? [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x70] : []) + [0x02, 0x80, 0x00, 0xab]
    }
}

/// §15.2: a source's HELLO lists encoding 3 exactly when its L ≥ 1; either without the
/// other is refused at HELLO (`incompatible`), not at the first lane segment.
@Suite struct LaneHelloConsistencyTests {
    func hello(_ role: Role, encodings: [Encoding], lanes: UInt16) -> Hello {
        Hello(version: 4, sessionID: [UInt8](repeating: 7, count: 16), role: role, encodings: encodings, devices: [],
              memory: [], streams: StreamOffer(count: 1, blockPages: 0, lanes: lanes))
    }

    @Test func encodingThreeAndLanesGoTogether() {
        let destination = hello(.destination, encodings: [.raw, .deflate, .zstd, .zstdLanes], lanes: 4)
        #expect(HelloExchange.mismatch(source: hello(.source, encodings: [.raw, .zstd, .zstdLanes], lanes: 2), destination: destination) == nil)
        #expect(HelloExchange.mismatch(source: hello(.source, encodings: [.raw, .zstd], lanes: 0), destination: destination) == nil)
        #expect(HelloExchange.mismatch(source: hello(.source, encodings: [.raw, .zstd], lanes: 2), destination: destination)
                == "the source uses 2 zstd lanes but does not list encoding 3 (zstdLanes)")
        #expect(HelloExchange.mismatch(source: hello(.source, encodings: [.raw, .zstd, .zstdLanes], lanes: 0), destination: destination)
                == "the source lists encoding 3 (zstdLanes) with no lanes (L = 0)")
    }
}
