import Foundation
import MigrationEngine
import MigrationWire
import SyncPrimitives
import Testing
import TestSupport

/// Version 6 (docs/PROTOCOL.md §17), engine to engine: a page whose bytes the
/// destination already holds travels as a copy segment, and the guest arrives
/// byte-exact however the session is cut, streamed or compressed.
@Suite(.serialized) struct PageCopySessions {
    static func senderOptions(streams: Int = 1, compression: CompressionPolicy = .none) -> SenderOptions {
        var o = ResumeRig.senderOptions()
        o.pageCopies = true
        o.deviceDigest = .xxh3
        o.streams = streams
        o.compression = compression
        // Small frames: a copy names only acknowledged pages (ACKs come every 1 MiB), and a
        // 4 MiB guest in 1 MiB frames would be encoded whole before the first ACK.
        o.pagesPerFrame = 16
        return o
    }

    static func receiverOptions(pageCopies: Bool = true) -> ReceiverOptions {
        var o = ResumeRig.receiverOptions()
        o.pageCopies = pageCopies
        o.deviceDigest = .xxh3
        return o
    }

    /// SimPair's guest, its upper half made of the lower half's pages in another order
    /// (a quarter of them zero, which stay zero segments).
    static func duplicatingPair(pages: UInt64 = 1024, dirtyPagesPerStep: Int = 16) throws -> SimPair {
        let pair = try SimPair(memoryPages: pages, dirtyPagesPerStep: dirtyPagesPerStep)
        let half = pages / 2
        for pfn in half..<pages {
            let page = try pair.sourceMemory.readPages(startPFN: (pfn * 7) % half, count: 1)
            try pair.sourceMemory.writePages(startPFN: pfn, bytes: page)
        }
        return pair
    }

    static func stats(_ run: ResumeRig.Run) throws -> (source: MigrationStats, destination: MigrationStats) {
        (try run.outcome.source.get(), try run.outcome.destination.get())
    }

    /// §17.1: version 6 only when both sides resume and want copies; without, the same
    /// guest goes with every page's bytes.
    @Test func copiesMigrateByteExactInFewerBytes() throws {
        var results: [(wire: UInt64, copied: UInt64)] = []
        for receiverTakesCopies in [true, false] {
            // 8 MiB: the copies start 4 MiB into the stream, after ACKs covered most of their sources.
            let pair = try Self.duplicatingPair(pages: 2048)
            let run = try ResumeRig.migrate(pair, options: Self.senderOptions(), receiverOptions: Self.receiverOptions(pageCopies: receiverTakesCopies))
            try Guarantee.migrated(run.outcome, pair)
            let (source, destination) = try Self.stats(run)
            #expect(source.copiedPages == destination.copiedPages, "both sides count the same copies")
            results.append((source.wireBytes, source.copiedPages))
        }
        // Of the upper half's 1024 pages, 3 in 4 are non-zero copies of lower-half pages;
        // those encoded before an ACK covered their original go with their bytes.
        #expect(results[0].copied >= 200, "with copies: \(results[0].copied) copied pages")
        #expect(results[1].copied == 0, "a destination without copies gets none")
        #expect(results[0].wire + results[0].copied * 4000 <= results[1].wire, "wire \(results[0].wire) B with, \(results[1].wire) B without")
    }

    /// A cut while frames that sent copy sources are unacknowledged (device data, the
    /// pages, a later pass with pages dirtied): those frames are built again from a
    /// fresh read, so nothing may rely on what they sent; the guest arrives byte-exact.
    @Test(arguments: [64 << 10, 400 << 10, 900 << 10, 1600 << 10])
    func aCutResumesWithCopies(cutAfterRawBytes: Int) throws {
        // 8 MiB: the copies come 4 MiB into the stream, well after the cut and the ACKs that follow it.
        let pair = try Self.duplicatingPair(pages: 2048, dirtyPagesPerStep: 24)
        let sims = pair.sourceSims
        let run = try ResumeRig.migrate(pair, options: Self.senderOptions(), receiverOptions: Self.receiverOptions(),
                                        cutFirstAfterRawBytes: cutAfterRawBytes,
                                        senderEvents: { event, _ in
                                            if case .iterationEnd(iteration: 0, _, _, _, _) = event { for d in sims { d.workloadStep() } }
                                        })
        try Guarantee.migrated(run.outcome, pair)
        #expect(run.events.source.contains("resumed") && run.events.destination.contains("resumed"), "\(run.events)")
        #expect(try Self.stats(run).source.copiedPages > 0)
    }

    /// Each stream names only pages it owns (§17.3): two streams with a cut of stream 0
    /// resume every stream, and copies went on both.
    @Test func copiesOnTwoStreamsSurviveACut() throws {
        let pair = try Self.duplicatingPair(pages: 2048, dirtyPagesPerStep: 24)
        var options = Self.senderOptions(streams: 2)
        options.downtimeTargetMs = 0.001
        options.maxIterations = 3
        let sims = pair.sourceSims
        let cut = LockedValue(false)
        let run = try ResumeRig.migrate(pair, options: options, receiverOptions: Self.receiverOptions(), senderEvents: { event, proxy in
            guard case .iterationEnd(let i, _, _, _, _) = event else { return }
            for d in sims { d.workloadStep() }
            if i == 1, cut.withLock({ c in defer { c = true }; return !c }) { proxy.cut() }
        })
        try Guarantee.migrated(run.outcome, pair)
        #expect(run.events.source.contains("resumed"), "\(run.events)")
        #expect(try Self.stats(run).source.copiedPages > 0)
    }

    /// zstd lanes and copies together, cut by bytes: lane frames (replayed byte for
    /// byte) may carry copies, which name only acknowledged pages.
    @Test func copiesBesideZstdLanesSurviveACut() throws {
        // ACKs come every 1 MiB of frames, which compressed pages take longer to fill: a larger guest.
        let pair = try Self.duplicatingPair(pages: 4096, dirtyPagesPerStep: 24)
        let sims = pair.sourceSims
        let run = try ResumeRig.migrate(pair, options: Self.senderOptions(compression: .zstd(level: 3)), receiverOptions: Self.receiverOptions(),
                                        cutFirstAfterRawBytes: 500 << 10,
                                        senderEvents: { event, _ in
                                            if case .iterationEnd(iteration: 0, _, _, _, _) = event { for d in sims { d.workloadStep() } }
                                        })
        try Guarantee.migrated(run.outcome, pair)
        #expect(run.events.source.contains("resumed"), "\(run.events)")
        #expect(try Self.stats(run).source.copiedPages > 0)
    }
}
