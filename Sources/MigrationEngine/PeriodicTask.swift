import Foundation
import SyncPrimitives

/// Runs `body` on a dedicated thread, then every `interval`, until `stop()`
/// (which waits for the thread) or until `body` returns false. Keep-alives,
/// the simulated workload and the benchmark's samplers all need exactly this.
public final class PeriodicTask: Sendable {
    private struct State {
        var stopped = false
        var finished = false
    }
    private let state = ConditionValue(State())

    public init(name: String, interval: Duration, _ body: @escaping @Sendable () -> Bool) {
        let t = Thread { [state] in
            while !state.withLock({ $0.stopped }) {
                guard body() else { break }
                // Sleeps for the interval, or until stop().
                state.wait(until: { $0.stopped }, deadline: monotonicSeconds() + interval.seconds) { _, _ in }
            }
            state.withLock { $0.finished = true }
        }
        t.name = name
        t.start()
    }

    public func stop() {
        state.withLock { $0.stopped = true }
        state.wait(until: { $0.finished }) { _, _ in }
    }
}
