/// True if every byte is zero (wide compares).
///
/// Eight 8-byte words are OR-ed per 64-byte step and tested once, which keeps the
/// loop branch-light; a non-zero byte still ends the scan within 64 bytes.
public func isAllZero(_ bytes: ArraySlice<UInt8>) -> Bool {
    bytes.withUnsafeBytes { isAllZero($0.bytes) }
}

/// As `isAllZero(_:)` on bytes lent without a copy (a page of the guest mapping).
public func isAllZero(_ bytes: RawSpan) -> Bool {
    bytes.withUnsafeBytes { raw in
        let count = raw.count
        var i = 0
        while i + 64 <= count {
            var acc: UInt64 = 0
            for k in stride(from: 0, to: 64, by: 8) {
                acc |= raw.loadUnaligned(fromByteOffset: i + k, as: UInt64.self)
            }
            if acc != 0 { return false }
            i += 64
        }
        while i + 8 <= count {
            if raw.loadUnaligned(fromByteOffset: i, as: UInt64.self) != 0 { return false }
            i += 8
        }
        while i < count {
            if raw[i] != 0 { return false }
            i += 1
        }
        return true
    }
}
