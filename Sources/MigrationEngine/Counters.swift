import MigrationWire
import SyncPrimitives

/// Byte, page and bitmap totals of the source, added to by the producer and the
/// compression workers.
final class Counters: Sendable {
    struct Totals {
        var produced: UInt64 = 0
        /// Of `produced`, what the writer has put on the wire: the rest is in the
        /// pipeline, and would go out inside the downtime.
        var written: UInt64 = 0
        var pages: UInt64 = 0
        var zeroPages: UInt64 = 0
        /// Pages sent as copies of pages the destination held (§17).
        var copiedPages: UInt64 = 0
        var bitmapsNone = 0
        var bitmapsAll = 0
        var bitmapsPartial = 0
    }
    private let totals = LockedValue(Totals())

    func addProduced(_ n: UInt64) { totals.withLock { $0.produced += n } }
    func addWritten(_ n: UInt64) { totals.withLock { $0.written += n } }
    func addPages(_ n: UInt64, zero: UInt64, copied: UInt64 = 0) {
        totals.withLock { $0.pages += n; $0.zeroPages += zero; $0.copiedPages += copied }
    }
    func addBitmap(none: Int = 0, all: Int = 0, partial: Int = 0) {
        totals.withLock { $0.bitmapsNone += none; $0.bitmapsAll += all; $0.bitmapsPartial += partial }
    }

    var current: Totals { totals.current }
    var rawProduced: UInt64 { totals.withLock { $0.produced } }
    var rawWritten: UInt64 { totals.withLock { $0.written } }
}

extension Counters {
    /// A PAGES frame's pages, zero and copied ones counted apart.
    func addPages(_ frame: PreparedFrame) {
        guard case .pages(let p) = frame.body else { return }
        var (all, zero, copied): (UInt64, UInt64, UInt64) = (0, 0, 0)
        for s in p.segments {
            all += UInt64(s.pageCount)
            if s.encoding == .zero { zero += UInt64(s.pageCount) }
            if s.encoding == .copy { copied += UInt64(s.pageCount) }
        }
        addPages(all, zero: zero, copied: copied)
    }
}
