import Foundation
import Testing
@testable import VFIODevice
@testable import VFIOSimulator

/// `Configuration.initialState`: the benchmark loads a device's state from its corpus.
struct InitialStateTests {
    @Test func initialStateBecomesTheDeviceStateAndItsSize() {
        let bytes = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var config = smallConfig(stateSize: 48 << 10)
        config.initialState = bytes
        let device = SimulatedDevice(configuration: config, guestMemory: nil)
        #expect(device.stateSnapshot() == bytes)
        #expect(device.configuration.stateSize == bytes.count)
        #expect(device.configuration.initialState == nil, "not kept: it would double the state's memory on the first write")
    }

    @Test func withoutInitialStateTheSeededStateIsUnchanged() {
        let a = SimulatedDevice(configuration: smallConfig(seed: 3), guestMemory: nil)
        var config = smallConfig(seed: 3)
        config.initialState = []  // empty means "none"
        let b = SimulatedDevice(configuration: config, guestMemory: nil)
        #expect(a.stateSnapshot() == b.stateSnapshot())
        #expect(a.stateSnapshot().count == 48 << 10)
    }

    @Test func initialStateFileIsReadIntoTheDeviceMemory() throws {
        let bytes = (0..<(40 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let path = NSTemporaryDirectory() + "vfio-sim-image-\(UUID().uuidString)"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        var config = smallConfig(stateSize: bytes.count)
        config.initialStateFile = path
        let device = SimulatedDevice(configuration: config, guestMemory: nil)
        #expect(device.stateSnapshot() == bytes)
    }
}
