/// Splits a byte stream into newline-terminated lines of bounded length. Every
/// line carries its range in the stream, so descriptors that arrived with its
/// bytes can be matched to it. A line over the limit is reported once and
/// skipped up to its newline without being buffered (memory stays bounded).
struct LineFramer {
    enum Item: Equatable {
        case line([UInt8], range: Range<Int>)
        case oversized
    }

    let limit: Int
    private var buffer: [UInt8] = []
    /// Stream offset of `buffer[0]`.
    private var bufferStart = 0
    private var discarding = false

    init(limit: Int) { self.limit = limit }

    /// Everything before this stream offset has been handed out or discarded.
    var consumedOffset: Int { bufferStart }

    mutating func append(_ bytes: [UInt8]) -> [Item] {
        buffer += bytes
        var items: [Item] = []
        while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
            let range = bufferStart..<(bufferStart + newline + 1)
            if discarding {
                discarding = false
            } else if newline > limit {
                items.append(.oversized)
            } else {
                items.append(.line(Self.trimmed(buffer[..<newline]), range: range))
            }
            buffer.removeSubrange(...newline)
            bufferStart = range.upperBound
        }
        if buffer.count > limit {
            if !discarding { items.append(.oversized) }
            discarding = true
            bufferStart += buffer.count
            buffer.removeAll()
        }
        return items
    }

    /// Tolerates CRLF (telnet, socat CRLF) and surrounding blanks.
    private static func trimmed(_ line: ArraySlice<UInt8>) -> [UInt8] {
        let blank: Set<UInt8> = [9, 10, 13, 32]
        guard let first = line.firstIndex(where: { !blank.contains($0) }),
              let last = line.lastIndex(where: { !blank.contains($0) }) else { return [] }
        return Array(line[first...last])
    }
}
