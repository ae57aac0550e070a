import Glibc
import Testing
@testable import VFIODevice
@testable import VFIOSimulator

@Suite struct DirtyBitmapTests {
    func saving(pages: Int = 2048, seed: UInt64 = 7) throws -> (SimulatedDevice, MigrationDevice, GuestMemory) {
        let mem = try makeGuest(pages: pages)
        let sim = SimulatedDevice(configuration: smallConfig(seed: seed), guestMemory: mem)
        let dev = MigrationDevice(name: "sim", region: sim)
        try dev.setState([.saving, .running])
        return (sim, dev, mem)
    }

    /// Segments tile [start, start+total) exactly, in order.
    func expectCovers(_ segments: [DirtySegment], start: UInt64, total: UInt64, sourceLocation: SourceLocation = #_sourceLocation) {
        var next = start
        for s in segments {
            #expect(s.startPFN == next, sourceLocation: sourceLocation)
            if case .bitmap(let b) = s.pages { #expect(b.count == Bitmap.byteCount(bits: s.pfnCount), sourceLocation: sourceLocation) }
            next += s.pfnCount
        }
        #expect(next == start + total, sourceLocation: sourceLocation)
    }

    @Test func noneWhenClean() throws {
        let (_, dev, _) = try saving()
        let source = RegionDirtyPageSource(device: dev)
        let segments = try source.query(startPFN: 0, pageSize: 4096, totalPFNs: 2048)
        #expect(segments == [DirtySegment(startPFN: 0, pageSize: 4096, pfnCount: 2048, pages: .none)])
        #expect(source.lastRounds == 1)
    }

    @Test func allWhenMostlyDirty() throws {
        let (sim, dev, _) = try saving()
        sim.simulateDMA(toPages: Array(0..<1200))
        let segments = try RegionDirtyPageSource(device: dev).query(startPFN: 0, pageSize: 4096, totalPFNs: 2048)
        #expect(segments == [DirtySegment(startPFN: 0, pageSize: 4096, pfnCount: 2048, pages: .all)])
        #expect(sim.dirtyPageCount == 0)
    }

    @Test func allEveryReportsAllOnSchedule() throws {
        let mem = try makeGuest(pages: 2048)
        var config = smallConfig(seed: 7)
        config.allEvery = 2
        let sim = SimulatedDevice(configuration: config, guestMemory: mem)
        let dev = MigrationDevice(name: "sim", region: sim)
        try dev.setState([.saving, .running])
        let source = RegionDirtyPageSource(device: dev)
        var kinds: [DirtyPages] = []
        for round in 0..<4 {
            sim.simulateDMA(toPages: [UInt64(10 + round)])  // one sparse page: never ALL by density
            kinds += try source.query(startPFN: 0, pageSize: 4096, totalPFNs: 2048).map(\.pages).filter { $0 == .all }
        }
        #expect(kinds.count == 2, "every second answer for a dirty range is ALL")
        #expect(try source.query(startPFN: 0, pageSize: 4096, totalPFNs: 2048).map(\.pages) == [.none], "NONE stays NONE")
    }

    @Test func partialCountsTakeSeveralRounds() throws {
        let (sim, dev, _) = try saving()
        let dirty: [UInt64] = stride(from: 5, to: 2048, by: 37).map { UInt64($0) }
        sim.simulateDMA(toPages: dirty)
        let source = RegionDirtyPageSource(device: dev)
        let segments = try source.query(startPFN: 0, pageSize: 4096, totalPFNs: 2048)
        expectCovers(segments, start: 0, total: 2048)
        #expect(source.lastRounds >= 2 && segments.count == source.lastRounds)
        #expect(segments.contains { if case .bitmap = $0.pages { true } else { false } })
        let reported = Set(segments.flatMap { $0.dirtyPFNs() })
        #expect(Set(dirty).isSubset(of: reported))
        // Exactly the dirty pages where a bitmap answered (ALL may cover a clean rest).
        for s in segments { if case .bitmap = s.pages { #expect(Set(s.dirtyPFNs()) == Set(dirty).filter { $0 >= s.startPFN && $0 < s.startPFN + s.pfnCount }) } }
        // Read-and-clear: a second query sees nothing.
        #expect(try source.query(startPFN: 0, pageSize: 4096, totalPFNs: 2048).map(\.pages) == [.none])
    }

    @Test func subRangesAndAllForTheRest() throws {
        let (sim, dev, _) = try saving(seed: 9)
        // Sparse at the front, dense at the back: partial rounds, then ALL for the rest.
        sim.simulateDMA(toPages: [100] + Array(1700..<2048))
        var q = DirtyBitmapQuery(device: dev)
        let segments = try q.run(startPFN: 64, pageSize: 4096, totalPFNs: 1984)
        expectCovers(segments, start: 64, total: 1984)
        #expect(segments.first.map { if case .bitmap = $0.pages { true } else { false } } == true)
        #expect(segments.last?.pages == .all)
        #expect(Set(segments.flatMap { $0.dirtyPFNs() }).isSuperset(of: [100] + Array(1700..<2048)))
    }

    @Test func workloadDirtiesOnlyWhileSaving() throws {
        let mem = try makeGuest(pages: 256)
        let sim = SimulatedDevice(configuration: smallConfig(dirtyPages: 16), guestMemory: mem)
        let dev = MigrationDevice(name: "sim", region: sim)
        sim.workloadStep()
        #expect(sim.dirtyPageCount == 0)
        let zeros = try (0..<256).filter { try mem.isZeroPage(UInt64($0)) }.count
        #expect(zeros < 256)  // pages were written, though not tracked
        try dev.setState([.saving, .running])
        sim.workloadStep()
        #expect(sim.dirtyPageCount > 0)
        let segments = try RegionDirtyPageSource(device: dev).query(startPFN: 0, pageSize: 4096, totalPFNs: 256)
        #expect(!segments.flatMap { $0.dirtyPFNs() }.isEmpty)
        try dev.setState(.saving)
        sim.workloadStep()  // stopped: no DMA
        #expect(sim.dirtyPageCount == 0)
    }

    @Test func segmentDirtyPFNs() {
        let s = DirtySegment(startPFN: 10, pageSize: 4096, pfnCount: 10, pages: .bitmap([0b1000_0001, 0b1111_1110]))
        #expect(s.dirtyPFNs() == [10, 17, 19])  // bits past pfnCount ignored
        #expect(DirtySegment(startPFN: 4, pageSize: 4096, pfnCount: 3, pages: .all).dirtyPFNs() == [4, 5, 6])
        #expect(DirtySegment(startPFN: 4, pageSize: 4096, pfnCount: 3, pages: .none).dirtyPFNs().isEmpty)
        #expect(Bitmap.masked([0xFF, 0xFF], bits: 10) == [0xFF, 0x03])
    }

    /// Runs come out of the bitmap a word at a time: across word edges, at the
    /// segment's end, with padding bits set, and for a bitmap of every PFN.
    @Test func dirtyRunsWalkTheBitmapByWords() {
        func runs(_ s: DirtySegment) -> [PFNRun] { Array(s.dirtyRuns) }
        var bytes = [UInt8](repeating: 0, count: 24)   // 192 bits
        for i in [0, 1, 2, 63, 64, 65, 127, 128, 190] { bytes[i / 8] |= 1 << UInt8(i % 8) }
        let s = DirtySegment(startPFN: 1000, pageSize: 4096, pfnCount: 191, pages: .bitmap(bytes))
        #expect(runs(s) == [PFNRun(startPFN: 1000, count: 3), PFNRun(startPFN: 1063, count: 3),
                            PFNRun(startPFN: 1127, count: 2), PFNRun(startPFN: 1190, count: 1)])
        #expect(s.dirtyCount == 9)
        let padded = DirtySegment(startPFN: 0, pageSize: 4096, pfnCount: 10, pages: .bitmap([0, 0xFC]))
        #expect(runs(padded).isEmpty)  // bits ≥ 10 are padding
        #expect(padded.dirtyCount == 0)
        let full = DirtySegment(startPFN: 5, pageSize: 4096, pfnCount: 130, pages: .bitmap([UInt8](repeating: 0xFF, count: 17)))
        #expect(runs(full) == [PFNRun(startPFN: 5, count: 130)])
        #expect(runs(DirtySegment(startPFN: 4, pageSize: 4096, pfnCount: 1 << 40, pages: .all)) == [PFNRun(startPFN: 4, count: 1 << 40)])
        #expect(runs(DirtySegment(startPFN: 4, pageSize: 4096, pfnCount: 1 << 40, pages: .none)).isEmpty)
    }

    /// A segment larger than a frame's limit splits on byte boundaries into pieces
    /// that together report exactly the same PFNs.
    @Test func segmentsSplitAtTheFrameLimit() {
        var bytes = [UInt8](repeating: 0, count: 13)   // 100 bits
        for i in [0, 15, 16, 17, 63, 64, 99] { bytes[i / 8] |= 1 << UInt8(i % 8) }
        let s = DirtySegment(startPFN: 7, pageSize: 4096, pfnCount: 100, pages: .bitmap(bytes))
        let pieces = s.split(maxPFNs: 16)
        #expect(pieces.map(\.pfnCount) == [16, 16, 16, 16, 16, 16, 4])
        #expect(pieces.map(\.startPFN) == [7, 23, 39, 55, 71, 87, 103])
        #expect(pieces.flatMap { $0.dirtyPFNs() } == s.dirtyPFNs())
        for p in pieces { if case .bitmap(let b) = p.pages { #expect(b.count == Bitmap.byteCount(bits: p.pfnCount)) } }
        let all = DirtySegment(startPFN: 0, pageSize: 4096, pfnCount: 40, pages: .all).split(maxPFNs: 16)
        #expect(all.map(\.pfnCount) == [16, 16, 8] && all.allSatisfy { $0.pages == .all })
        #expect(s.split(maxPFNs: 104) == [s])
    }
}
