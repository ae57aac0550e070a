import Testing
@testable import MigrationEngine
import MigrationWire

/// The source's lanes (PROTOCOL.md §15): per stream what the HELLOs settled on, and
/// never more than `maxLanesPerSession` over the session's streams, each lane's context
/// taking ~22 MiB; the workers past a stream's lanes compress segments alone.
@Suite struct ZstdLaneBudgetTests {
    func encoding(lanes: Int) -> SendEncoding {
        SendEncoding(policy: .zstd(level: 3), destinationAccepts: [.raw, .deflate, .zstd, .zstdLanes], workers: 8, lanes: lanes)
    }

    @Test func theFirstStreamsTakeTheSessionsLanes() {
        #expect((0..<4).map { encoding(lanes: 2).lanes(stream: $0) } == [2, 2, 0, 0])
        #expect((0..<2).map { encoding(lanes: 4).lanes(stream: $0) } == [4, 0])
        #expect((0..<6).map { encoding(lanes: 1).lanes(stream: $0) } == [1, 1, 1, 1, 0, 0])
        #expect(encoding(lanes: 0).lanes(stream: 0) == 0)
    }

    @Test func aWorkerPastItsStreamsLanesHasNone() throws {
        let e = encoding(lanes: 2)
        #expect(try e.makeLane(index: 1, stream: 1)?.index == 1)
        #expect(try e.makeLane(index: 2, stream: 0) == nil)
        #expect(try e.makeLane(index: 0, stream: 2) == nil)
    }
}
