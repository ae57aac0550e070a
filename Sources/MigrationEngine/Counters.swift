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
        var bitmapsNone = 0
        var bitmapsAll = 0
        var bitmapsPartial = 0
    }
    private let totals = LockedValue(Totals())

    func addProduced(_ n: UInt64) { totals.withLock { $0.produced += n } }
    func addWritten(_ n: UInt64) { totals.withLock { $0.written += n } }
    func addPages(_ n: UInt64, zero: UInt64) { totals.withLock { $0.pages += n; $0.zeroPages += zero } }
    func addBitmap(none: Int = 0, all: Int = 0, partial: Int = 0) {
        totals.withLock { $0.bitmapsNone += none; $0.bitmapsAll += all; $0.bitmapsPartial += partial }
    }

    var current: Totals { totals.current }
    var rawProduced: UInt64 { totals.withLock { $0.produced } }
    var rawWritten: UInt64 { totals.withLock { $0.written } }
}
