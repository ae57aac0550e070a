import Glibc
import Testing
@testable import VFIODevice
@testable import VFIOSimulator

/// Every access the header forbids or leaves undefined is refused by the simulator.
@Suite struct SimulatedDeviceStrictnessTests {
    func saving() throws -> (SimulatedDevice, MigrationDevice) {
        let sim = SimulatedDevice(configuration: smallConfig(), guestMemory: try makeGuest(pages: 64))
        let dev = MigrationDevice(name: "sim", region: sim)
        try dev.setState([.saving, .running])
        return (sim, dev)
    }

    @Test func widthAlignmentAndRange() throws {
        let (sim, _) = try saving()
        #expect(thrownError { try sim.read32(at: 8) }?.kind == "wrongWidth")       // 4 bytes of pending_bytes
        #expect(thrownError { try sim.read32(at: 12) }?.kind == "wrongWidth")      // upper half of pending_bytes
        #expect(thrownError { try sim.read64(at: 0) }?.kind == "wrongWidth")       // 8 bytes over device_state
        #expect(thrownError { try sim.write64(3, at: 0) }?.kind == "wrongWidth")
        #expect(thrownError { try sim.write32(1, at: 32) }?.kind == "wrongWidth")
        #expect(thrownError { try sim.read64(at: 4) }?.kind == "misaligned")
        #expect(thrownError { try sim.read64(at: 60) }?.kind == "misaligned")
        #expect(thrownError { try sim.read32(at: 1) }?.kind == "misaligned")
        #expect(thrownError { try sim.read64(at: 64) }?.kind == "notAHeaderField")
        #expect(thrownError { try sim.readBytes(count: 1, at: sim.regionSize) }?.kind == "outOfRange")
        #expect(thrownError { try sim.readBytes(count: 16, at: 16) }?.kind == "outOfRange")
        #expect(thrownError { try sim.writeBytes([0], at: sim.regionSize - 1 + 1) }?.kind == "outOfRange")
        #expect(try sim.read32(at: 4) == 0)  // reserved reads as zero
    }

    @Test func fieldDirections() throws {
        let (sim, _) = try saving()
        for f in [MigrationInfo.Field.startPFN, .pageSize, .totalPFNs] {
            #expect(thrownError { try sim.read64(at: f.offset) } == .writeOnlyField(field: f.name, offset: f.offset))
        }
        for f in [MigrationInfo.Field.pendingBytes, .dataOffset, .copiedPFNs] {
            #expect(thrownError { try sim.write64(1, at: f.offset) } == .readOnlyField(field: f.name, offset: f.offset))
        }
        #expect(thrownError { try sim.write32(1, at: 4) }?.kind == "readOnlyField")
    }

    @Test func saveStepsOutOfSequence() throws {
        let (sim, _) = try saving()
        // data_offset before pending_bytes, data_size before data_offset, data before staging.
        #expect(thrownError { try sim.read64(at: 16) }?.kind == "outOfSequence")
        #expect(thrownError { try sim.read64(at: 24) }?.kind == "outOfSequence")
        #expect(thrownError { try sim.readBytes(count: 8, at: 4096) }?.kind == "outOfSequence")
        #expect(try sim.read64(at: 8) > 0)
        #expect(thrownError { try sim.read64(at: 24) }?.kind == "outOfSequence")        // still before data_offset
        let offset = try sim.read64(at: 16)
        #expect(thrownError { try sim.readBytes(count: 8, at: offset) }?.kind == "outOfSequence")   // before data_size
        #expect(thrownError { try sim.read64(at: 8) }?.kind == "outOfSequence")          // staged chunk unread
        #expect(thrownError { try sim.read64(at: 16) }?.kind == "outOfSequence")         // second data_offset
        let size = try sim.read64(at: 24)
        #expect(size > 0)
        #expect(thrownError { try sim.readBytes(count: Int(size) + 1, at: offset) }?.kind == "outOfRange")
        #expect(thrownError { try sim.readBytes(count: 4, at: offset - 4) }?.kind == "outOfRange")
        #expect(thrownError { try sim.readBytes(count: 1, at: offset + size) }?.kind == "outOfRange")
        // Reading in two pieces inside the window is fine.
        let half = Int(size / 2)
        let a = try sim.readBytes(count: half, at: offset)
        let b = try sim.readBytes(count: Int(size) - half, at: offset + UInt64(half))
        #expect(a.count + b.count == Int(size))
        #expect(try sim.read64(at: 8) > 0)  // next pass may start
    }

    @Test func pendingZeroMeansNothingToStage() throws {
        let sim = SimulatedDevice(configuration: smallConfig(stateSize: 1024, maxChunk: 8192), guestMemory: nil)
        let dev = MigrationDevice(name: "sim", region: sim)
        try dev.setState([.saving, .running])
        var save = SaveSequence(device: dev)
        while try save.nextChunk() != nil {}
        #expect(try sim.read64(at: 8) == 0)
        #expect(thrownError { try sim.read64(at: 16) }?.kind == "outOfSequence")
        // Pre-copy: 0 is "nothing now"; the running workload makes it grow again.
        sim.workloadStep()
        #expect(try dev.pendingBytes() > 0)
        // Stop-and-copy: drains to 0 and stays 0.
        try dev.setState(.saving)
        while try save.nextChunk() != nil {}
        sim.workloadStep()
        #expect(try dev.pendingBytes() == 0)
        #expect(try dev.pendingBytes() == 0)
    }

    @Test func bitmapStepsOutOfSequence() throws {
        let (sim, _) = try saving()
        #expect(thrownError { try sim.read64(at: 56) }?.kind == "outOfSequence")          // nothing written
        try sim.write64(0, at: 32)
        try sim.write64(4096, at: 40)
        #expect(thrownError { try sim.read64(at: 56) }?.kind == "outOfSequence")          // total_pfns missing
        try sim.write64(64, at: 48)
        sim.simulateDMA(toPages: [1, 9])
        let copied = try sim.read64(at: 56)
        #expect(copied != MigrationInfo.dirtyPFNsNone && copied != MigrationInfo.dirtyPFNsAll)
        #expect(thrownError { try sim.readBytes(count: 1, at: 4096) }?.kind == "outOfSequence")   // bitmap before data_offset
        #expect(thrownError { try sim.read64(at: 56) }?.kind == "outOfSequence")          // parameters consumed by the round
        let offset = try sim.read64(at: 16)
        #expect(thrownError { try sim.read64(at: 24) }?.kind == "outOfSequence")          // no data_size for bitmaps
        let bytes = Bitmap.byteCount(bits: copied)
        #expect(thrownError { try sim.readBytes(count: bytes + 1, at: offset) }?.kind == "outOfRange")
        #expect(try sim.readBytes(count: bytes, at: offset)[0] & 0b10 == 0b10)
        // A wrong page size is refused.
        try sim.write64(0, at: 32); try sim.write64(2 << 20, at: 40); try sim.write64(64, at: 48)
        #expect(thrownError { try sim.read64(at: 56) }?.kind == "invalidArgument")
    }

    @Test func accessInTheWrongDeviceState() throws {
        let sim = SimulatedDevice(configuration: smallConfig(), guestMemory: nil)
        #expect(sim.currentState == .running)
        for offset: UInt64 in [8, 16, 24, 56] {
            #expect(thrownError { try sim.read64(at: offset) }?.kind == "wrongDeviceState", "read64 at \(offset) while RUNNING")
        }
        #expect(thrownError { try sim.write64(0, at: 32) }?.kind == "wrongDeviceState")
        #expect(thrownError { try sim.write64(0, at: 24) }?.kind == "wrongDeviceState")
        #expect(thrownError { try sim.writeBytes([1], at: 4096) }?.kind == "wrongDeviceState")
        #expect(thrownError { try sim.readBytes(count: 1, at: 4096) }?.kind == "wrongDeviceState")

        let dev = MigrationDevice(name: "sim", region: sim)
        try dev.setState([.saving, .running])
        #expect(thrownError { try sim.write64(10, at: 24) }?.kind == "wrongDeviceState")   // data_size written while SAVING
        #expect(thrownError { try sim.writeBytes([1], at: 4096) }?.kind == "wrongDeviceState")

        try dev.setState(.running)
        try dev.setState(.resuming)
        #expect(thrownError { try sim.read64(at: 8) }?.kind == "wrongDeviceState")
        #expect(thrownError { try sim.read64(at: 24) }?.kind == "wrongDeviceState")
        #expect(thrownError { try sim.write64(0, at: 32) }?.kind == "wrongDeviceState")
        #expect(thrownError { try sim.read64(at: 56) }?.kind == "wrongDeviceState")
    }

    @Test func resumeStepsOutOfSequence() throws {
        let sim = SimulatedDevice(configuration: smallConfig(), guestMemory: nil)
        let dev = MigrationDevice(name: "dst", region: sim)
        try dev.setState(.resuming)
        #expect(thrownError { try sim.write64(0, at: 24) }?.kind == "outOfSequence")       // data_size before data_offset
        #expect(thrownError { try sim.writeBytes([1, 2], at: 4096) }?.kind == "outOfSequence")
        let offset = try sim.read64(at: 16)
        #expect(offset >= 4096 && offset % 4096 == 0)
        #expect(thrownError { try sim.read64(at: 16) }?.kind == "outOfSequence")          // data_offset twice
        try sim.writeBytes([UInt8](repeating: 9, count: 100), at: offset)
        #expect(thrownError { try sim.write64(101, at: 24) }?.kind == "outOfRange")        // more than written
        #expect(thrownError { try sim.write64(UInt64(sim.stagingCapacity) + 1, at: 24) }?.kind == "outOfRange")
        #expect(thrownError { try sim.writeBytes([1], at: offset + UInt64(sim.stagingCapacity)) }?.kind == "outOfRange")
        #expect(thrownError { try sim.writeBytes([1], at: offset - 1) }?.kind == "outOfRange")
        // A gap in the written data counts only the contiguous prefix.
        try sim.writeBytes([1], at: offset + 200)
        #expect(thrownError { try sim.write64(201, at: 24) }?.kind == "outOfRange")
        try sim.write64(100, at: 24)
        #expect(thrownError { try sim.write64(100, at: 24) }?.kind == "outOfSequence")     // next chunk needs data_offset
        // 100 bytes of 9s is no valid stream: RUNNING is refused, STOPPED (abandon) allowed.
        #expect(thrownError { try dev.setState(.running) }?.kind == "transitionFailed")
        #expect(try dev.readState() == .resuming)
        try dev.setState(.stopped)
    }

    @Test func stateValuesAndTransitions() throws {
        let sim = SimulatedDevice(configuration: smallConfig(), guestMemory: nil)
        #expect(thrownError { try sim.write32(6, at: 0) }?.kind == "invalidStateValue")    // SAVING|RESUMING
        #expect(thrownError { try sim.write32(7, at: 0) }?.kind == "invalidStateValue")
        #expect(thrownError { try sim.write32(1 | 0x80, at: 0) }?.kind == "invalidStateValue")  // reserved clobbered
        #expect(thrownError { try sim.write32(2, at: 0) } == .invalidTransition(from: .running, to: .saving))
        #expect(thrownError { try sim.write32(0, at: 0) } == .invalidTransition(from: .running, to: .stopped))
        #expect(thrownError { try sim.write32(5, at: 0) }?.kind == "invalidTransition")
        #expect(sim.currentState == .running)
        try sim.write32(1, at: 0)                 // same state: no-op
        try sim.write32(3, at: 0)
        #expect(thrownError { try sim.write32(4, at: 0) }?.kind == "invalidTransition")
        #expect(thrownError { try sim.write32(0, at: 0) }?.kind == "invalidTransition")
        try sim.write32(2, at: 0)
        #expect(thrownError { try sim.write32(3, at: 0) }?.kind == "invalidTransition")   // no way back to pre-copy
        try sim.write32(0, at: 0)
        #expect(thrownError { try sim.write32(1, at: 0) }?.kind == "invalidTransition")   // a stopped source stays stopped
        try sim.write32(4, at: 0)
        #expect(thrownError { try sim.write32(3, at: 0) }?.kind == "invalidTransition")
        try sim.write32(0, at: 0)                 // abandon
        #expect(sim.currentState == .stopped)
        // The documented table, checked entry by entry.
        let all: [DeviceState] = (0...7).map { DeviceState(rawValue: $0) }.filter(\.isValid)
        var allowed = 0
        for from in all { for to in all where from != to && SimulatedDevice.supportsTransition(from: from, to: to) { allowed += 1 } }
        #expect(allowed == 9)
    }

    @Test func reservedBitsSurviveAStateChange() throws {
        let sim = SimulatedDevice(configuration: smallConfig(), guestMemory: nil)
        sim.setReservedStateBits(0xDEAD_BEE8)
        let dev = MigrationDevice(name: "sim", region: sim)
        try dev.setState([.saving, .running])
        #expect(sim.currentState.rawValue == 0xDEAD_BEE8 | 3)
        try dev.setState(.saving)
        #expect(sim.currentState.rawValue == 0xDEAD_BEE8 | 2)
        #expect(try dev.readState() == .saving)
        #expect(try dev.readRawState() == 0xDEAD_BEEA)
    }

    @Test func invalidStateNeverReachesTheDevice() throws {
        let sim = SimulatedDevice(configuration: smallConfig(), guestMemory: nil)
        let dev = MigrationDevice(name: "sim", region: sim)
        let accesses = sim.accessCount, writes = sim.stateWriteCount
        #expect(thrownError { try dev.setState([.saving, .resuming]) }?.kind == "invalidStateValue")
        #expect(thrownError { try dev.setState(DeviceState(rawValue: 0x11)) }?.kind == "invalidStateValue")
        #expect(sim.accessCount == accesses && sim.stateWriteCount == writes)
        try dev.setState([.saving, .running])
        #expect(sim.stateWriteCount == writes + 1 && sim.accessCount == accesses + 2)  // read + write
    }

    @Test func concurrentWorkloadAndEngine() async throws {
        let sim = SimulatedDevice(configuration: smallConfig(), guestMemory: try makeGuest(pages: 64))
        let dev = MigrationDevice(name: "sim", region: sim)
        try dev.setState([.saving, .running])
        let worker = Task.detached { for _ in 0..<200 { sim.workloadStep() } }
        var save = SaveSequence(device: dev)
        for _ in 0..<100 { _ = try save.nextChunk() }
        await worker.value
        try dev.setState(.saving)
        while try save.nextChunk() != nil {}
        #expect(try dev.pendingBytes() == 0)
    }
}
