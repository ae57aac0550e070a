import Testing
@testable import VFIOSimulator

/// The simulated device's stream and state checksum (`SimulatedStream.mix`) must see
/// every byte: a change in any lane of the 32-byte steps, in the words after them or
/// in the tail bytes, and words that trade places between lanes, all change it.
@Suite struct StreamChecksumTests {
    func mix(_ bytes: [UInt8], seed: UInt64 = 7) -> UInt64 {
        bytes.withUnsafeBytes { SimulatedStream.mix(seed, $0) }
    }

    @Test(arguments: [0, 7, 8, 15, 16, 24, 31, 32, 63, 64, 70, 71, 75])
    func everyByteCounts(at offset: Int) {
        let bytes = (0..<76).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        var changed = bytes
        changed[offset] ^= 0x01
        #expect(mix(changed) != mix(bytes))
    }

    @Test func lanesAreNotInterchangeable() {
        let bytes = (0..<64).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
        var swapped = bytes
        for k in 0..<8 { swapped.swapAt(k, 8 + k) }
        #expect(mix(swapped) != mix(bytes))
        // Two 32-byte steps trading places also changes it.
        let steps = Array(bytes[32..<64] + bytes[0..<32])
        #expect(mix(steps) != mix(bytes))
    }

    @Test func theSeedAndTheLengthCount() {
        let bytes = [UInt8](repeating: 0, count: 40)
        #expect(mix(bytes, seed: 1) != mix(bytes, seed: 2))
        #expect(mix(bytes) != mix(Array(bytes.dropLast())))
        #expect(SimulatedStream.checksum(bytes) != SimulatedStream.checksum(Array(bytes.dropLast(8))))
    }
}
