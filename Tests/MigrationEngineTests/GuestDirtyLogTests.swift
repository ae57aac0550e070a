import Foundation
import Testing
import MigrationEngine
import VFIODevice
import VFIOSimulator

/// `--dirty vmm` through the engine: a fake VMM that, like a vCPU, writes guest
/// pages between rounds and reports them only through its dirty log (the
/// devices report nothing), so the destination matches only if those are re-sent.
@Suite(.serialized)
struct GuestDirtyLogTests {
    static let pages: UInt64 = 512

    static func pair() throws -> SimPair { try SimPair(memoryPages: pages, dirtyPagesPerStep: 0) }

    /// Three pre-copy rounds of `pair` with `vmm` as the guest's dirty log.
    static func migrate(_ pair: SimPair, vmm: WritingVMM) throws -> Loopback.Outcome {
        var options = Loopback.quickOptions()
        options.guestDirtyLog = vmm
        options.maxIterations = 3
        return try Loopback.migrate(source: pair.source, sourceMemory: pair.sourceMemory,
                                    destination: pair.destination, destinationMemory: pair.destinationMemory,
                                    options: options)
    }

    @Test func pagesTheGuestDirtiedAreResentByteExact() throws {
        let pair = try Self.pair()
        let vmm = WritingVMM(memory: pair.sourceMemory, pageCount: Self.pages)
        let outcome = try Self.migrate(pair, vmm: vmm)
        _ = try outcome.source.get()
        _ = try outcome.destination.get()
        #expect(vmm.syncs >= 2, "one sync per dirty round, the last after the devices stopped: \(vmm.syncs)")
        #expect(try pair.identicalMemory())
    }

    /// A page the device and the guest both dirtied is sent twice; harmless.
    @Test func aPageDirtyInBothSourcesIsFine() throws {
        var pair = try Self.pair()
        let vmm = WritingVMM(memory: pair.sourceMemory, pageCount: Self.pages)
        pair.source[0].dirtyPages = EverythingDirty()
        let outcome = try Self.migrate(pair, vmm: vmm)
        _ = try outcome.source.get()
        _ = try outcome.destination.get()
        #expect(try pair.identicalMemory())
    }

    /// No bitmap handed over: refused before any device leaves RUNNING.
    @Test func noDirtyLogIsRefusedBeforeTheDevicesMove() throws {
        let pair = try Self.pair()
        var options = Loopback.quickOptions()
        options.guestDirtyLog = WritingVMM(memory: pair.sourceMemory, pageCount: Self.pages, setUp: false)
        let outcome = try Loopback.migrate(source: pair.source, sourceMemory: pair.sourceMemory,
                                           destination: pair.destination, destinationMemory: pair.destinationMemory,
                                           options: options)
        guard case .failure(let e as MigrationError) = outcome.source else { Issue.record("the source should refuse"); return }
        guard case .guestDirtyLog(let why) = e.failure else { Issue.record("expected guestDirtyLog, got \(e.failure)"); return }
        #expect(why.contains("dirty-log-setup"), "\(why)")
        #expect(pair.sourceSims[0].currentState == .running)
    }

    @Test func snapshotWindowsFollowTheWordLayout() {
        // Pages 0, 2, 63 and 64: bytes 05 00 .. 80 | 01.
        let snapshot = GuestDirtySnapshot(words: [0x8000_0000_0000_0005, 1], pageCount: 100)
        let whole = snapshot.segment(startPFN: 0, count: 72, pageSize: 4096)
        #expect(whole.pages == .bitmap([0x05, 0, 0, 0, 0, 0, 0, 0x80, 0x01]))
        #expect(snapshot.segment(startPFN: 64, count: 8, pageSize: 4096).pages == .bitmap([0x01]))
        #expect(snapshot.segment(startPFN: 8, count: 48, pageSize: 4096).pages == DirtyPages.none)
    }
}

/// A VMM stand-in: each sync writes a few pages (as its vCPUs would have since
/// the last one) and reports them in the snapshot.
final class WritingVMM: GuestDirtyLog, @unchecked Sendable {  // `round` only under `lock`
    private let lock = NSLock()
    private let memory: GuestMemory
    private let pageCount: UInt64
    private let setUp: Bool
    private var round = 0

    init(memory: GuestMemory, pageCount: UInt64, setUp: Bool = true) {
        self.memory = memory; self.pageCount = pageCount; self.setUp = setUp
    }

    var syncs: Int { lock.withLock { round } }

    func start(pageSize: UInt64, pageCount: UInt64) throws(GuestDirtyLogError) {
        guard setUp else { throw GuestDirtyLogError("no dirty-log-setup was done") }
    }

    func sync() throws(GuestDirtyLogError) -> GuestDirtySnapshot {
        let r = lock.withLock { round += 1; return round }
        var words = [UInt64](repeating: 0, count: Int((pageCount + 63) / 64))
        for k in 0..<8 {
            let page = UInt64((r * 37 + k * 61) % Int(pageCount))
            try? memory.writePages(startPFN: page, bytes: [UInt8](repeating: UInt8(truncatingIfNeeded: r * 13 + k + 1), count: 4096))
            words[Int(page / 64)] |= 1 << (page % 64)
        }
        return GuestDirtySnapshot(words: words, pageCount: pageCount)
    }
}

/// A device source that reports every page dirty every round.
final class EverythingDirty: DirtyPageSource {
    func start() throws(DeviceError) {}
    func query(startPFN: UInt64, pageSize: UInt64, totalPFNs: UInt64) throws(DeviceError) -> [DirtySegment] {
        [DirtySegment(startPFN: startPFN, pageSize: pageSize, pfnCount: totalPFNs, pages: .all)]
    }
    func stop() throws(DeviceError) {}
}
