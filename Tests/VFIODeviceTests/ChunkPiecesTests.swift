import Glibc
import SystemPackage
import Testing
@testable import VFIODevice
@testable import VFIOSimulator

/// A chunk read and written in pieces: the seed's steps with the data step (d on
/// save, b on resume) split, checked by the strict simulator.
@Suite struct ChunkPiecesTests {
    @Test func aChunkReadInPiecesAndResumedInPiecesIsOneChunk() throws {
        let config = smallConfig(seed: 11, stateSize: 96 << 10, maxChunk: 16 << 10)
        let source = SimulatedDevice(configuration: config, guestMemory: nil)
        let src = MigrationDevice(name: "src", region: source)
        let dest = SimulatedDevice(configuration: config, guestMemory: nil)
        let dst = MigrationDevice(name: "dst", region: dest)
        try src.setState([.saving, .running])
        try src.setState(.saving)
        try dst.setState(.resuming)
        var save = SaveSequence(device: src)
        var resume = ResumeSequence(device: dst)
        var chunks = 0
        while let staged = try save.stageChunk() {
            try resume.begin(length: staged.size)
            var offset: UInt64 = 0
            while offset < staged.size {                       // uneven pieces: 1000 bytes
                let n = Int(min(1000, staged.size - offset))
                try resume.write(try save.read(staged, at: offset, count: n))
                offset += UInt64(n)
            }
            try resume.finish()
            chunks += 1
        }
        #expect(chunks > 1 && resume.chunksApplied == chunks)
        try dst.setState(.running)                             // the simulator validates the whole stream
        #expect(dest.stateSnapshot() == source.stateSnapshot())
    }

    @Test func aChunkReadOnlyInPartIsRefusedAtTheNextPass() throws {
        let sim = SimulatedDevice(configuration: smallConfig(maxChunk: 8 << 10), guestMemory: nil)
        let dev = MigrationDevice(name: "sim", region: sim)
        try dev.setState([.saving, .running])
        var save = SaveSequence(device: dev)
        let staged = try #require(try save.stageChunk())
        _ = try save.read(staged, at: 0, count: Int(staged.size) - 1)   // all but the last byte
        #expect(thrownError { try save.stageChunk() }?.kind == "outOfSequence")
        _ = try save.read(staged, at: staged.size - 1, count: 1)
        #expect(try save.stageChunk() != nil)
        #expect(thrownError { try save.read(staged, at: 1, count: Int(staged.size)) }?.kind == "invalidArgument")
    }

    @Test func aChunkLargerThanTheDataSectionFailsBeforeAnyWrite() throws {
        let sim = SimulatedDevice(configuration: smallConfig(), guestMemory: nil)
        let dev = MigrationDevice(name: "dst", region: sim)
        try dev.setState(.resuming)
        var resume = ResumeSequence(device: dev)
        let before = sim.accessCount
        let e = thrownError { try resume.begin(length: sim.regionSize) }
        guard case .chunkDoesNotFit(let chunk, let bytes, let offset, let size)? = e else { Issue.record("expected chunkDoesNotFit, got \(String(describing: e))"); return }
        #expect(chunk == 0 && bytes == sim.regionSize && offset >= 4096 && size == sim.regionSize)
        #expect(e?.errnoCode == .fileTooLarge)
        #expect(sim.accessCount == before + 1, "only data_offset was read")
    }

    @Test func piecesMustAddUpToTheChunk() throws {
        let sim = SimulatedDevice(configuration: smallConfig(), guestMemory: nil)
        let dev = MigrationDevice(name: "dst", region: sim)
        try dev.setState(.resuming)
        var resume = ResumeSequence(device: dev)
        #expect(thrownError { try resume.write([1]) }?.kind == "invalidArgument")
        try resume.begin(length: 4)
        #expect(thrownError { try resume.begin(length: 4) }?.kind == "invalidArgument")
        try resume.write([1, 2])
        #expect(thrownError { try resume.finish() }?.kind == "invalidArgument")
        #expect(thrownError { try resume.write([3, 4, 5]) }?.kind == "invalidArgument")
        try resume.write([3, 4])
        try resume.finish()
        #expect(resume.chunksApplied == 1 && resume.bytesApplied == 4)
    }
}
