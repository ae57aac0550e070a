import Testing
@testable import VFIODevice
@testable import VFIOSimulator

/// The bitset against a plain [Bool] model, over random ranges that start and
/// end inside words, on word boundaries and at the ends.
@Suite struct PageBitsetTests {
    @Test func agreesWithABoolArray() {
        var rng = SplitMix64(seed: 11)
        for count in [1, 63, 64, 65, 200, 1000] {
            var bits = PageBitset(count: count)
            var model = [Bool](repeating: false, count: count)
            for _ in 0..<400 {
                let a = Int(rng.next(below: UInt64(count + 1))), b = Int(rng.next(below: UInt64(count + 1)))
                let range = min(a, b)..<max(a, b)
                switch rng.next(below: 3) {
                case 0:
                    let i = Int(rng.next(below: UInt64(count)))
                    bits[i] = true; model[i] = true
                case 1:
                    bits.clear(range); for i in range { model[i] = false }
                default:
                    #expect(bits.setCount(in: range) == model[range].filter { $0 }.count)
                }
            }
            #expect(bits.setCount == model.filter { $0 }.count)
            for i in 0..<count { #expect(bits[i] == model[i]) }
            bits.clearAll()
            #expect(bits.setCount == 0)
        }
    }
}
