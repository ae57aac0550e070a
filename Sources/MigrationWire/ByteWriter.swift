/// Appends little-endian integers and byte strings to a growing buffer.
struct ByteWriter {
    private(set) var bytes: [UInt8]

    init(capacity: Int = 0) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Continues an existing buffer (its storage moves in; `take()` hands it back).
    init(continuing buffer: inout [UInt8], reserving extra: Int) {
        bytes = []
        swap(&bytes, &buffer)
        bytes.reserveCapacity(bytes.count + extra)
    }

    mutating func take() -> [UInt8] {
        var out: [UInt8] = []
        swap(&out, &bytes)
        return out
    }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { bytes.append(UInt8(truncatingIfNeeded: v)); bytes.append(UInt8(truncatingIfNeeded: v >> 8)) }
    mutating func u32(_ v: UInt32) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) } }
    mutating func u64(_ v: UInt64) { for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) } }
    mutating func zeros(_ n: Int) { bytes.append(contentsOf: repeatElement(0, count: n)) }
    mutating func append(_ b: [UInt8]) { bytes.append(contentsOf: b) }
    mutating func append(_ b: ArraySlice<UInt8>) { bytes.append(contentsOf: b) }
    /// The bytes of `span`, in one copy (guest pages straight out of the mapping).
    mutating func append(_ span: RawSpan) {
        span.withUnsafeBytes { raw in bytes.append(contentsOf: raw.assumingMemoryBound(to: UInt8.self)) }
    }

    /// A u16 length prefix then the UTF-8 bytes. The caller keeps strings within 65535 bytes.
    mutating func string16(_ s: String) {
        let utf8 = Array(s.utf8)
        precondition(utf8.count <= Int(UInt16.max), "string longer than 65535 UTF-8 bytes")
        u16(UInt16(utf8.count))
        append(utf8)
    }

    /// Drops everything from `count` on (a frame that could not be finished).
    mutating func truncate(to count: Int) { bytes.removeSubrange(count...) }

    /// Rewrites a u32 already written at `offset` (used to patch the header's payload length).
    mutating func patchU32(_ v: UInt32, at offset: Int) {
        for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
    }
}
