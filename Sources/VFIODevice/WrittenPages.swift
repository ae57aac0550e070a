import Synchronization

/// The pages of a guest memory written since this process created it zero-filled
/// (a new file, the part a file was extended by, a memfd). A page whose bit is
/// clear is known to be zero, so making it zero costs neither a SEEK_DATA probe
/// nor a read of the page.
///
/// Word-level atomics: pages may be applied from several threads at once (on
/// disjoint PFN sets); a bit is set before its page is written, so a clear bit
/// never hides data.
final class WrittenPages: Sendable {
    /// 64 words of 64 bits: 4096 pages (16 MiB of 4 KiB pages) per block.
    private final class Block: Sendable {
        let words: InlineArray<64, Atomic<UInt64>>
        init() { words = InlineArray { _ in Atomic(0) } }
    }
    private static let pagesPerBlock: UInt64 = 64 * 64
    private let blocks: [Block]
    let pageCount: UInt64

    /// Pages below `writtenBelow` hold what the file held before (unknown): they
    /// count as written.
    init(pageCount: UInt64, writtenBelow: UInt64) {
        self.pageCount = pageCount
        let blockCount = Int((pageCount + Self.pagesPerBlock - 1) / Self.pagesPerBlock)
        blocks = (0..<blockCount).map { _ in Block() }
        if writtenBelow > 0 { markWritten(0..<min(writtenBelow, pageCount)) }
    }

    /// Sets the bits of `pages` (in bounds: the caller checked them).
    func markWritten(_ pages: Range<UInt64>) {
        forEachWord(pages) { word, mask in
            if word.load(ordering: .relaxed) & mask != mask { word.bitwiseOr(mask, ordering: .relaxed) }
        }
    }

    /// Calls `body` for each page of `pages` that was written (its content is unknown).
    func forEachWritten(_ pages: Range<UInt64>, _ body: (UInt64) -> Void) {
        var base = pages.lowerBound & ~63
        forEachWord(pages) { word, mask in
            var bits = word.load(ordering: .relaxed) & mask
            while bits != 0 {
                body(base + UInt64(bits.trailingZeroBitCount))
                bits &= bits - 1
            }
            base += 64
        }
    }

    /// The 64-page words covering `pages`, each with the mask of its bits inside them.
    private func forEachWord(_ pages: Range<UInt64>, _ body: (borrowing Atomic<UInt64>, UInt64) -> Void) {
        precondition(pages.upperBound <= pageCount, "pages \(pages) outside \(pageCount)")
        guard !pages.isEmpty else { return }
        var wordStart = pages.lowerBound & ~63
        while wordStart < pages.upperBound {
            let low = max(pages.lowerBound, wordStart) - wordStart
            let high = min(pages.upperBound, wordStart + 64) - wordStart
            let mask = (high == 64 ? ~0 : (UInt64(1) << high) - 1) & ~((UInt64(1) << low) - 1)
            let word = wordStart / 64
            body(blocks[Int(word / 64)].words[Int(word % 64)], mask)
            wordStart += 64
        }
    }
}
