import Foundation
import Testing
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice

/// A dirty source that answers every query with one segment for the whole range
/// asked, as the IOMMU container's dirty log does; records the largest range asked.
final class OneSegmentDirtySource: DirtyPageSource, @unchecked Sendable {
    private let inner: RegionDirtyPageSource
    private(set) var largestQuery: UInt64 = 0
    init(device: MigrationDevice) { inner = RegionDirtyPageSource(device: device) }
    func start() throws {}
    func stop() throws {}
    func query(startPFN: UInt64, pageSize: UInt64, totalPFNs: UInt64) throws -> [DirtySegment] {
        largestQuery = max(largestQuery, totalPFNs)
        var bytes = [UInt8](repeating: 0, count: Int((totalPFNs + 7) / 8))
        for segment in try inner.query(startPFN: startPFN, pageSize: pageSize, totalPFNs: totalPFNs) {
            for run in segment.dirtyRuns {
                for pfn in run.startPFN..<(run.startPFN + run.count) {
                    let i = Int(pfn - startPFN)
                    bytes[i / 8] |= 1 << UInt8(i % 8)
                }
            }
        }
        let pages: DirtyPages = bytes.allSatisfy { $0 == 0 } ? .none : .bitmap(bytes)
        return [DirtySegment(startPFN: startPFN, pageSize: pageSize, pfnCount: totalPFNs, pages: pages)]
    }
}

@Suite(.serialized)
struct SizeLimitTests {
    /// A receiver that accepts at most 256 PFNs per DIRTY_BITMAP: the sender asks
    /// every dirty source window by window and never sends a larger bitmap, for
    /// NONE, ALL and bitmap answers and for a one-segment (IOMMU-like) source.
    @Test func dirtyBitmapsStayWithinTheReceiversLimit() throws {
        var pair = try SimPair(names: ["gpu0", "nic0"], memoryPages: 2048, dirtyPagesPerStep: 64)
        let oneSegment = OneSegmentDirtySource(device: pair.source[1].device)
        pair.source[1] = SourceDevice(device: pair.source[1].device, dirtyPages: oneSegment, compatibility: pair.source[1].compatibility)
        var limits = WireLimits()
        limits.maxPFNsPerFrame = 256
        var options = Loopback.quickOptions()
        options.limits = limits
        options.maxIterations = 4
        options.downtimeTargetMs = 0   // iterate: every iteration queries the dirty sources
        var receiver = Loopback.quickReceiver()
        receiver.limits = limits
        let workload = Workload(pair.sourceSims)
        let outcome = try Loopback.migrate(source: pair.source, sourceMemory: pair.sourceMemory,
                                           destination: pair.destination, destinationMemory: pair.destinationMemory,
                                           options: options, receiverOptions: receiver)
        workload.stop()
        let src = try outcome.source.get()
        _ = try outcome.destination.get()
        #expect(oneSegment.largestQuery == 256)
        // Two devices, 2048 / 256 = 8 windows each, per dirty-page pass (iterations 1… and the final one).
        #expect(src.bitmapsNone + src.bitmapsAll + src.bitmapsPartial >= 2 * 8 * src.iterations)
        #expect(src.bitmapsPartial > 0 && src.bitmapsNone > 0)
        #expect(try pair.identicalMemory())
    }
}
