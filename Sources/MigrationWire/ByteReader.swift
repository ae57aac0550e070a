/// Reads little-endian fields from a window of a buffer. Every checked read that
/// would run past the window throws `truncated` naming the frame and the field,
/// so a payload can never make the decoder read outside its own bytes.
struct ByteReader {
    private let bytes: [UInt8]
    private(set) var position: Int
    let end: Int
    let frame: FrameType

    init(_ bytes: [UInt8], range: Range<Int>, frame: FrameType) {
        precondition(range.lowerBound >= 0 && range.upperBound <= bytes.count)
        self.bytes = bytes
        self.position = range.lowerBound
        self.end = range.upperBound
        self.frame = frame
    }

    var remaining: Int { end - position }

    private func need(_ n: Int, _ field: String) throws(WireError) {
        guard n <= remaining else { throw .truncated(frame: frame, field: field) }
    }

    mutating func u8(_ field: String) throws(WireError) -> UInt8 {
        try need(1, field)
        defer { position += 1 }
        return bytes[position]
    }
    mutating func u16(_ field: String) throws(WireError) -> UInt16 { try need(2, field); defer { position += 2 }; return loadLE16(bytes, at: position) }
    mutating func u32(_ field: String) throws(WireError) -> UInt32 { try need(4, field); defer { position += 4 }; return loadLE32(bytes, at: position) }
    mutating func u64(_ field: String) throws(WireError) -> UInt64 { try need(8, field); defer { position += 8 }; return loadLE64(bytes, at: position) }

    mutating func bytes(_ n: Int, _ field: String) throws(WireError) -> [UInt8] {
        Array(try slice(n, field))
    }

    /// `n` bytes as a view of the buffer, not a copy (bulk payloads).
    mutating func slice(_ n: Int, _ field: String) throws(WireError) -> ArraySlice<UInt8> {
        try need(n, field)
        defer { position += n }
        return bytes[position..<(position + n)]
    }

    /// Reserved bytes: must be zero so that a later version can give them a meaning.
    mutating func reserved(_ n: Int, _ field: String) throws(WireError) {
        try need(n, field)
        for i in position..<(position + n) where bytes[i] != 0 {
            throw .invalidValue(frame: frame, field: field, value: UInt64(bytes[i]))
        }
        position += n
    }

    mutating func string16(_ field: String) throws(WireError) -> String {
        let n = Int(try u16("\(field) length"))
        let raw = try bytes(n, field)
        guard let s = String(validating: raw, as: UTF8.self) else {
            throw .invalidUTF8(frame: frame, field: field)
        }
        return s
    }

    /// The payload must be consumed exactly: trailing bytes are an error, not padding.
    func expectEnd() throws(WireError) {
        guard remaining == 0 else { throw .trailingBytes(frame: frame, count: remaining) }
    }
}

// Little-endian loads; the caller has checked the bounds.
func loadLE16(_ b: [UInt8], at i: Int) -> UInt16 { UInt16(b[i]) | UInt16(b[i + 1]) << 8 }
func loadLE32(_ b: [UInt8], at i: Int) -> UInt32 { UInt32(loadLE16(b, at: i)) | UInt32(loadLE16(b, at: i + 2)) << 16 }
func loadLE64(_ b: [UInt8], at i: Int) -> UInt64 { UInt64(loadLE32(b, at: i)) | UInt64(loadLE32(b, at: i + 4)) << 32 }
