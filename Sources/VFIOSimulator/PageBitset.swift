/// One bit per guest page: the simulator's DMA dirty log. A bit per page keeps
/// it at 32 KiB per GiB of guest, and counting a range is a popcount per word.
struct PageBitset {
    private var words: [UInt64]
    let count: Int

    init(count: Int) {
        self.count = count
        words = [UInt64](repeating: 0, count: (count + 63) / 64)
    }

    subscript(i: Int) -> Bool {
        get { words[i >> 6] & (1 << UInt64(i & 63)) != 0 }
        set {
            if newValue { words[i >> 6] |= 1 << UInt64(i & 63) } else { words[i >> 6] &= ~(1 << UInt64(i & 63)) }
        }
    }

    /// Set bits in `range`.
    func setCount(in range: Range<Int>) -> Int {
        PageBitset.wordMasks(range).reduce(0) { $0 + (words[$1.word] & $1.mask).nonzeroBitCount }
    }

    var setCount: Int { words.reduce(0) { $0 + $1.nonzeroBitCount } }

    mutating func clear(_ range: Range<Int>) {
        for (w, mask) in PageBitset.wordMasks(range) { words[w] &= ~mask }
    }

    mutating func clearAll() {
        for i in words.indices { words[i] = 0 }
    }

    /// Each word `range` touches, with the mask of its bits inside the range.
    private static func wordMasks(_ range: Range<Int>) -> some Sequence<(word: Int, mask: UInt64)> {
        sequence(state: range.lowerBound) { i -> (word: Int, mask: UInt64)? in
            guard i < range.upperBound else { return nil }
            let lo = i & 63
            let width = min(64 - lo, range.upperBound - i)
            let mask: UInt64 = width == 64 ? ~0 : ((1 << UInt64(width)) - 1) << UInt64(lo)
            defer { i += width }
            return (i >> 6, mask)
        }
    }
}
