import Glibc
import TestSupport
import SystemPackage
import Testing
@testable import VFIODevice
@testable import VFIOSimulator

/// Runs a source through pre-copy (workload between chunks) and stop-and-copy.
/// Returns the chunks and the source snapshot taken on entering stopped SAVING.
func migrateSource(_ config: SimulatedDevice.Configuration, precopyChunks: Int = 40) throws -> (chunks: [SavedChunk], snapshot: [UInt8], source: SimulatedDevice) {
    let source = SimulatedDevice(configuration: config, guestMemory: try makeGuest(pages: 64))
    let dev = MigrationDevice(name: "src", region: source)
    let initial = source.stateSnapshot()
    try dev.setState([.saving, .running])
    var save = SaveSequence(device: dev)
    var chunks: [SavedChunk] = []
    for _ in 0..<precopyChunks {
        if let chunk = try save.nextChunk() { chunks.append(chunk) }
        source.workloadStep()
    }
    try dev.setState(.saving)
    let snapshot = source.stateSnapshot()
    let changed = snapshot != initial
    #expect(changed, "the workload must have changed the state during pre-copy")
    while let chunk = try save.nextChunk() { chunks.append(chunk) }
    #expect(try dev.pendingBytes() == 0)
    #expect(save.chunksStaged == chunks.count)
    return (chunks, snapshot, source)
}

func resume(_ chunks: [[UInt8]], config: SimulatedDevice.Configuration) throws -> (SimulatedDevice, MigrationDevice) {
    let dest = SimulatedDevice(configuration: config, guestMemory: nil)
    let dev = MigrationDevice(name: "dst", region: dest)
    try dev.setState(.resuming)
    var resume = ResumeSequence(device: dev)
    for chunk in chunks { try resume.apply(chunk) }
    #expect(resume.chunksApplied == chunks.count)
    #expect(resume.bytesApplied == UInt64(chunks.map(\.count).reduce(0, +)))
    return (dest, dev)
}

@Suite struct SaveResumeTests {
    @Test func roundTripReproducesTheSnapshot() throws {
        let config = smallConfig()
        let (chunks, snapshot, source) = try migrateSource(config)
        let frozen = source.stateSnapshot() == snapshot
        #expect(frozen)  // stopped: nothing changes any more
        let (dest, dev) = try resume(chunks.map(\.bytes), config: config)
        let differsBefore = dest.stateSnapshot() != snapshot
        #expect(differsBefore)
        try dev.setState(.running)
        let equal = dest.stateSnapshot() == snapshot
        #expect(equal)
        #expect(dest.currentState == .running)
    }

    @Test func chunkBoundariesAndPendingVary() throws {
        let config = smallConfig(maxChunk: 8192)
        let (chunks, _, _) = try migrateSource(config)
        let sizes = Set(chunks.map(\.bytes.count))
        #expect(sizes.count >= 4, "chunk sizes: \(sizes.sorted())")
        #expect(chunks.allSatisfy { $0.bytes.count <= 8192 && $0.bytes.count > 0 })
        #expect(chunks.allSatisfy { $0.pendingBefore > 0 })
        #expect(Set(chunks.map(\.pendingBefore)).count > 4)
    }

    @Test func saveIssuesTheHeaderStepsInOrder() throws {
        let sim = SimulatedDevice(configuration: smallConfig(), guestMemory: nil)
        let rec = RecordingRegion(sim)
        let dev = MigrationDevice(name: "rec", region: rec)
        try dev.setState([.saving, .running])
        rec.log = []
        var save = SaveSequence(device: dev)
        let chunk = try #require(try save.nextChunk())
        guard rec.log.count == 4, case .rb(let offset, let count) = rec.log[3] else {
            Issue.record("unexpected accesses \(rec.log)"); return
        }
        #expect(Array(rec.log[0..<3]) == [.r64(8), .r64(16), .r64(24)])
        #expect(count == chunk.bytes.count && offset >= 4096)

        try dev.setState(.saving)
        while try save.nextChunk() != nil {}
        try dev.setState(.stopped)
        try dev.setState(.resuming)
        rec.log = []
        var resume = ResumeSequence(device: dev)
        #expect(thrownError { try resume.apply(chunk.bytes) } == nil)
        guard rec.log.count == 3, case .r64(16) = rec.log[0], case .wb(_, let n) = rec.log[1], case .w64(24) = rec.log[2] else {
            Issue.record("unexpected accesses \(rec.log)"); return
        }
        #expect(n == chunk.bytes.count)
    }

    @Test func dataOffsetVaries() throws {
        let sim = SimulatedDevice(configuration: smallConfig(), guestMemory: try makeGuest(pages: 64))
        let dev = MigrationDevice(name: "sim", region: sim)
        try dev.setState([.saving, .running])
        var offsets: [UInt64] = []
        for _ in 0..<12 {
            guard try sim.read64(at: 8) > 0 else { break }
            let offset = try sim.read64(at: 16)
            let size = try sim.read64(at: 24)
            _ = try sim.readBytes(count: Int(size), at: offset)
            offsets.append(offset)
        }
        #expect(offsets.count == 12)
        #expect(offsets.allSatisfy { $0 >= 4096 && $0 % 4096 == 0 && $0 + UInt64(sim.stagingCapacity) <= sim.regionSize })
        #expect(zip(offsets, offsets.dropFirst()).allSatisfy { $0 != $1 }, "consecutive chunks at \(offsets)")
        // The bitmap is staged elsewhere than the last device data.
        sim.simulateDMA(toPages: [3])
        try sim.write64(0, at: 32); try sim.write64(4096, at: 40); try sim.write64(64, at: 48)
        #expect(try sim.read64(at: 56) != MigrationInfo.dirtyPFNsNone)
        #expect(try sim.read64(at: 16) != offsets.last)
    }

    @Test func corruptOrIncompleteStreamsAreRefusedAtRunning() throws {
        let config = smallConfig(seed: 11)
        let (saved, snapshot, _) = try migrateSource(config, precopyChunks: 10)
        let chunks = saved.map(\.bytes)
        #expect(chunks.count >= 4)

        var flipped = chunks
        flipped[2][flipped[2].count / 2] ^= 0x40
        var truncatedTail = chunks
        truncatedTail[truncatedTail.count - 1].removeLast()
        let variants: [(String, [[UInt8]])] = [
            ("missing last chunk", Array(chunks.dropLast())),
            ("missing middle chunk", chunks.enumerated().filter { $0.offset != 1 }.map(\.element)),
            ("flipped byte", flipped),
            ("truncated trailer", truncatedTail),
            ("garbage appended", chunks + [[1, 2, 3]]),
            ("reordered", [chunks[1], chunks[0]] + chunks.dropFirst(2)),
            ("nothing", []),
        ]
        for (name, stream) in variants {
            let (dest, dev) = try resume(stream, config: config)
            let before = dest.stateSnapshot()
            let error = thrownError { try dev.setState(.running) }
            #expect(error?.kind == "transitionFailed", "\(name): \(String(describing: error))")
            #expect(try dev.readState() == .resuming, "\(name)")
            let unchanged = dest.stateSnapshot() == before
            #expect(unchanged, "\(name): state must not change")
            try dev.setState(.stopped)
        }
        // A destination of a different size refuses the stream too.
        let (other, otherDev) = try resume(chunks, config: smallConfig(seed: 11, stateSize: 32 << 10))
        #expect(thrownError { try otherDev.setState(.running) }?.description.contains("state size") == true)
        let otherDiffers = other.stateSnapshot() != snapshot
        #expect(otherDiffers)
        // The untouched stream still works.
        let (good, goodDev) = try resume(chunks, config: config)
        try goodDev.setState(.running)
        let goodEqual = good.stateSnapshot() == snapshot
        #expect(goodEqual)
    }

    @Test func rollbackAndANewSessionStartOver() throws {
        let config = smallConfig(seed: 5)
        let source = SimulatedDevice(configuration: config, guestMemory: nil)
        let dev = MigrationDevice(name: "src", region: source)
        try dev.setState([.saving, .running])
        var save = SaveSequence(device: dev)
        for _ in 0..<3 { _ = try save.nextChunk() }
        try dev.setState(.running)                       // rollback
        #expect(thrownError { try dev.pendingBytes() }?.kind == "wrongDeviceState")
        try dev.setState([.saving, .running])            // a new stream from scratch
        var again = SaveSequence(device: dev)
        var chunks: [[UInt8]] = []
        while let c = try again.nextChunk() { chunks.append(c.bytes) }
        try dev.setState(.saving)
        let snapshot = source.stateSnapshot()
        while let c = try again.nextChunk() { chunks.append(c.bytes) }
        let (dest, destDev) = try resume(chunks, config: config)
        try destDev.setState(.running)
        let equal = dest.stateSnapshot() == snapshot
        #expect(equal)
    }
}

@Suite struct FaultInjectionTests {
    @Test func failTransitionFiresOnce() throws {
        let sim = SimulatedDevice(configuration: smallConfig(), guestMemory: nil)
        let dev = MigrationDevice(name: "sim", region: sim)
        sim.inject(.failTransition(to: .saving))
        try dev.setState([.saving, .running])            // another target: unaffected
        let e = thrownError { try dev.setState(.saving) }
        #expect(e == .transitionFailed(from: [.saving, .running], to: .saving, errno: .ioError, reason: "injected fault: device did not reach SAVING"))
        #expect(sim.currentState == [.saving, .running])
        #expect(sim.pendingFaults.isEmpty)
        try dev.setState(.saving)
        #expect(sim.currentState == .saving)
    }

    @Test func failSaveReadHitsTheNumberedChunk() throws {
        let sim = SimulatedDevice(configuration: smallConfig(), guestMemory: nil)
        let dev = MigrationDevice(name: "sim", region: sim)
        sim.inject(.failSaveRead(chunk: 2))
        try dev.setState([.saving, .running])
        var save = SaveSequence(device: dev)
        _ = try save.nextChunk()
        _ = try save.nextChunk()
        let e = thrownError { try save.nextChunk() }
        #expect(e?.kind == "deviceIOError" && e?.errnoCode == .ioError)
        #expect(save.chunksStaged == 3)  // the third was staged (a–c); its data read (d) failed
        #expect(sim.pendingFaults.isEmpty)
        try dev.setState(.running)                       // the engine rolls back
        #expect(sim.currentState == .running)
    }

    @Test func rejectResumeDataFailsTheChunkAndTheResume() throws {
        let config = smallConfig(seed: 3)
        let (saved, _, _) = try migrateSource(config, precopyChunks: 5)
        let dest = SimulatedDevice(configuration: config, guestMemory: nil)
        let dev = MigrationDevice(name: "dst", region: dest)
        dest.inject(.rejectResumeData(chunk: 1))
        try dev.setState(.resuming)
        var resume = ResumeSequence(device: dev)
        try resume.apply(saved[0].bytes)
        let e = thrownError { try resume.apply(saved[1].bytes) }
        #expect(e?.kind == "resumeDataRejected")
        #expect(resume.chunksApplied == 1)
        for chunk in saved.dropFirst(2) { try resume.apply(chunk.bytes) }
        #expect(thrownError { try dev.setState(.running) }?.kind == "transitionFailed")
        #expect(dest.pendingFaults.isEmpty)
    }
}
