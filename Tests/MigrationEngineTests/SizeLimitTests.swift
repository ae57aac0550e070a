import Foundation
import Testing
import TestSupport
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice
import VFIOSimulator

/// A dirty source that answers every query with one segment for the whole range
/// asked, as the IOMMU container's dirty log does; records the largest range asked.
final class OneSegmentDirtySource: DirtyPageSource, @unchecked Sendable {
    private let inner: RegionDirtyPageSource
    private(set) var largestQuery: UInt64 = 0
    init(device: MigrationDevice) { inner = RegionDirtyPageSource(device: device) }
    func start() throws(DeviceError) {}
    func stop() throws(DeviceError) {}
    func query(startPFN: UInt64, pageSize: UInt64, totalPFNs: UInt64) throws(DeviceError) -> [DirtySegment] {
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
        options.downtimeTargetMs = 0.000001   // iterate: every iteration queries the dirty sources (0 is refused)
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
        // The mix of answers follows the workload's dirty rate against the query rate,
        // which ThreadSanitizer's slowdown shifts (every window dirty: no NONE).
        if !TestEnvironment.underSanitizer { #expect(src.bitmapsPartial > 0 && src.bitmapsNone > 0) }
        #expect(try pair.identicalMemory())
    }
}

/// Forwards to a region and records what the chunk protocol did: data_size reads
/// (source chunk sizes), data_offset reads, data writes and data_size writes.
final class RecordingRegion: MigrationRegion, @unchecked Sendable {
    enum Event: Equatable { case dataOffset(UInt64), dataSizeRead(UInt64), write(offset: UInt64, count: Int), dataSizeWrite(UInt64) }
    private let inner: any MigrationRegion
    private let lock = NSLock()
    private var log: [Event] = []
    init(_ inner: any MigrationRegion) { self.inner = inner }
    var events: [Event] { lock.lock(); defer { lock.unlock() }; return log }
    private func note(_ e: Event) { lock.lock(); log.append(e); lock.unlock() }

    var regionSize: UInt64 { inner.regionSize }
    func read32(at offset: UInt64) throws(DeviceError) -> UInt32 { try inner.read32(at: offset) }
    func write32(_ value: UInt32, at offset: UInt64) throws(DeviceError) { try inner.write32(value, at: offset) }
    func read64(at offset: UInt64) throws(DeviceError) -> UInt64 {
        let v = try inner.read64(at: offset)
        if offset == MigrationInfo.Field.dataOffset.offset { note(.dataOffset(v)) }
        if offset == MigrationInfo.Field.dataSize.offset { note(.dataSizeRead(v)) }
        return v
    }
    func write64(_ value: UInt64, at offset: UInt64) throws(DeviceError) {
        try inner.write64(value, at: offset)
        if offset == MigrationInfo.Field.dataSize.offset { note(.dataSizeWrite(value)) }
    }
    func readBytes(count: Int, at offset: UInt64) throws(DeviceError) -> [UInt8] { try inner.readBytes(count: count, at: offset) }
    func writeBytes(_ bytes: [UInt8], at offset: UInt64) throws(DeviceError) {
        try inner.writeBytes(bytes, at: offset)
        note(.write(offset: offset, count: bytes.count))
    }

    var savedChunkSizes: [UInt64] { events.compactMap { if case .dataSizeRead(let n) = $0 { return n } else { return nil } } }
    var resumedChunkSizes: [UInt64] { events.compactMap { if case .dataSizeWrite(let n) = $0 { return n } else { return nil } } }

    /// Every resumed chunk: data_offset, then writes at increasing, contiguous offsets
    /// from it covering exactly the size, then one data_size write of that size.
    func resumeStepsAreOnePerChunk() -> Bool {
        var base: UInt64?, next: UInt64 = 0
        for e in events {
            switch e {
            case .dataOffset(let o): guard base == nil else { return false }; base = o; next = o
            case .write(let o, let n): guard base != nil, o == next else { return false }; next += UInt64(n)
            case .dataSizeWrite(let n): guard let b = base, next - b == n else { return false }; base = nil
            case .dataSizeRead: return false
            }
        }
        return base == nil
    }
}

/// One simulated device per side, regions recorded.
struct RecordedSimPair {
    let source: SimulatedDevice, destination: SimulatedDevice
    let sourceRegion: RecordingRegion, destinationRegion: RecordingRegion
    init(source sourceConfig: SimulatedDevice.Configuration, destination destinationConfig: SimulatedDevice.Configuration) {
        source = SimulatedDevice(configuration: sourceConfig, guestMemory: nil)
        destination = SimulatedDevice(configuration: destinationConfig, guestMemory: nil)
        sourceRegion = RecordingRegion(source)
        destinationRegion = RecordingRegion(destination)
    }
    func migrate(options: SenderOptions, receiver: ReceiverOptions) throws -> Loopback.Outcome {
        let src = MigrationDevice(name: "gpu0", region: sourceRegion)
        let dst = MigrationDevice(name: "gpu0", region: destinationRegion)
        return try Loopback.migrate(source: [SourceDevice(device: src, dirtyPages: nil, compatibility: "sim")], sourceMemory: nil,
                                    destination: [DestinationDevice(device: dst, compatibility: "sim")], destinationMemory: nil,
                                    options: options, receiverOptions: receiver)
    }
}

extension SizeLimitTests {
    /// Receivers that accept 64 KiB payloads; the driver stages chunks of up to
    /// 1 MiB. Each chunk crosses as a first piece and continuations and is written
    /// back as exactly one chunk with the source's boundaries.
    @Test func chunksLargerThanAFrameAreResumedAsOneChunkEach() throws {
        let config = SimulatedDevice.Configuration(stateSize: 3 << 20, seed: 5, dirtyPagesPerStep: 0, stateBytesPerStep: 0, maxChunkSize: 1 << 20)
        let pair = RecordedSimPair(source: config, destination: config)
        let limits = WireLimits(maxPayload: 64 << 10, maxInflated: 64 << 10)
        var options = Loopback.quickOptions()
        options.limits = limits
        var receiver = Loopback.quickReceiver()
        receiver.limits = limits
        let outcome = try pair.migrate(options: options, receiver: receiver)
        let src = try outcome.source.get()
        let dst = try outcome.destination.get()
        let saved = pair.sourceRegion.savedChunkSizes
        #expect(saved.filter { $0 > UInt64(limits.maxPayload) }.count >= 3, "chunks above maxPayload: \(saved)")
        #expect(pair.destinationRegion.resumedChunkSizes == saved)
        #expect(pair.destinationRegion.resumeStepsAreOnePerChunk())
        #expect(src.devices[0].chunks == UInt64(saved.count) && dst.devices[0].chunks == UInt64(saved.count))
        #expect(pair.destination.stateSnapshot() == pair.source.stateSnapshot())
    }

    /// Default limits (16 MiB frames) and a driver that stages chunks of up to 40 MiB.
    @Test func aChunkAboveSixteenMiBMigratesWithDefaultLimits() throws {
        let config = SimulatedDevice.Configuration(stateSize: 72 << 20, seed: 9, dirtyPagesPerStep: 0, stateBytesPerStep: 0, maxChunkSize: 40 << 20)
        let pair = RecordedSimPair(source: config, destination: config)
        var options = Loopback.quickOptions()
        options.compression = .none   // the point is the size, not deflate's speed in a debug build
        let outcome = try pair.migrate(options: options, receiver: Loopback.quickReceiver())
        _ = try outcome.source.get()
        _ = try outcome.destination.get()
        let saved = pair.sourceRegion.savedChunkSizes
        #expect(saved.contains { $0 > 16 << 20 }, "a chunk above 16 MiB: \(saved)")
        #expect(pair.destinationRegion.resumedChunkSizes == saved)
        #expect(pair.destinationRegion.resumeStepsAreOnePerChunk())
        #expect(pair.destination.stateSnapshot() == pair.source.stateSnapshot())
    }

    /// A destination whose data section is smaller than the source's chunks fails at
    /// the chunk's first piece with a clear device error, before writing any of it;
    /// both sides roll back.
    @Test func aChunkTooLargeForTheDestinationFailsBeforeAnyWrite() throws {
        let big = SimulatedDevice.Configuration(stateSize: 2 << 20, seed: 5, dirtyPagesPerStep: 0, stateBytesPerStep: 0, maxChunkSize: 4 << 20)
        var small = big
        small.maxChunkSize = 256 << 10
        let pair = RecordedSimPair(source: big, destination: small)
        let outcome = try pair.migrate(options: Loopback.quickOptions(), receiver: Loopback.quickReceiver())
        guard case .failure(let e as MigrationError) = outcome.destination else { Issue.record("destination should fail"); return }
        guard case .device(.chunkDoesNotFit(let chunk, _, _, _), _) = e.failure else { Issue.record("expected chunkDoesNotFit, got \(e.failure)"); return }
        #expect(chunk == 0 && e.device == "gpu0" && e.disposition == .rolledBack)
        #expect(!pair.destinationRegion.events.contains { if case .write = $0 { return true } else { return false } })
        guard case .failure(let s as MigrationError) = outcome.source else { Issue.record("source should fail"); return }
        #expect(s.disposition == .rolledBack && pair.source.currentState == .running)
        #expect(pair.destination.currentState != .running)
    }
}
