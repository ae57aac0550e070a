/// Small seeded generator: the simulator (and the demo's content) must be reproducible from a seed.
public struct SplitMix64: Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in 0..<bound (bound > 0); the modulo bias is irrelevant here.
    mutating func next(below bound: UInt64) -> UInt64 {
        precondition(bound > 0)
        return next() % bound
    }

    mutating func next(in range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(next(below: UInt64(range.upperBound - range.lowerBound) + 1))
    }

    public mutating func fill(_ bytes: inout [UInt8], range: Range<Int>) {
        bytes.withUnsafeMutableBytes { fill(UnsafeMutableRawBufferPointer(rebasing: $0[range])) }
    }

    /// Eight bytes per step (little-endian words), the same bytes as a byte-wise fill.
    mutating func fill(_ out: UnsafeMutableRawBufferPointer) {
        var i = 0
        while i + 8 <= out.count {
            out.storeBytes(of: next().littleEndian, toByteOffset: i, as: UInt64.self)
            i += 8
        }
        if i < out.count {
            var word = next()
            while i < out.count { out[i] = UInt8(truncatingIfNeeded: word); word >>= 8; i += 1 }
        }
    }
}
