import Foundation
import SyncPrimitives

/// The wire limit of one sender, changeable while a migration runs
/// (`Sender.setBandwidth`, the control socket's `set`). It paces by the average
/// rate since the limit was last set: a change applies from that instant on, and
/// neither owes nor credits the bytes that went out under the old limit (a lowered
/// limit must not first stall the link to pay back the faster past).
final class BandwidthLimiter: Sendable {
    private struct State {
        var limit: UInt64?
        var since = ContinuousClock.now
        var bytes: UInt64 = 0
    }
    private let state: LockedValue<State>

    init(bytesPerSecond: UInt64?) {
        state = LockedValue(State(limit: bytesPerSecond))
    }

    /// nil (or 0) = no limit.
    var bytesPerSecond: UInt64? { state.withLock { $0.limit } }

    func set(bytesPerSecond: UInt64?) {
        state.withLock { $0 = State(limit: bytesPerSecond) }
    }

    /// Starts the average afresh with the limit in force: the time before a
    /// session's first write (connecting, opening devices) is no credit for a burst.
    func restart() {
        state.withLock { $0 = State(limit: $0.limit) }
    }

    /// After `count` bytes were written: sleeps until the average since the limit
    /// was set is back under it. The caller holds the write lock, so nothing else
    /// passes meanwhile; a change made during the sleep applies from the next write.
    func pace(afterWriting count: UInt64) {
        let wait: Double = state.withLock { s in
            s.bytes += count
            guard let limit = s.limit, limit > 0 else { return 0 }
            return Double(s.bytes) / Double(limit) - (ContinuousClock.now - s.since).seconds
        }
        if wait > 0 { Thread.sleep(forTimeInterval: wait) }
    }
}
