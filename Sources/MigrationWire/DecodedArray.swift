/// A new array of exactly `count` bytes, all written by `fill` (a decoder that
/// writes into a span: the same code serves a payload decoded into guest memory
/// and one decoded into an array). No array when `fill` throws.
func decodedArray(count: Int, _ fill: (inout MutableSpan<UInt8>) throws(WireError) -> Void) throws(WireError) -> [UInt8] {
    var failure: WireError?
    let output = [UInt8](unsafeUninitializedCapacity: max(count, 1)) { out, initialized in
        var span = UnsafeMutableBufferPointer(rebasing: out[0..<count]).mutableSpan
        do throws(WireError) { try fill(&span) } catch { failure = error }
        initialized = failure == nil ? count : 0
    }
    if let failure { throw failure }
    return output
}
