import Foundation

/// Runs `body` on a dedicated thread, then every `interval`, until `stop()`
/// (which waits for the thread) or until `body` returns false. Keep-alives,
/// the simulated workload and the benchmark's samplers all need exactly this.
public final class PeriodicTask: @unchecked Sendable {
    private let condition = NSCondition()
    private var stopped = false
    private var finished = false

    public init(name: String, interval: Duration, _ body: @escaping @Sendable () -> Bool) {
        let t = Thread { [self] in
            condition.lock()
            while !stopped {
                condition.unlock()
                let goOn = body()
                condition.lock()
                if !goOn { break }
                if !stopped { _ = condition.wait(until: Date(timeIntervalSinceNow: interval.seconds)) }
            }
            finished = true
            condition.broadcast()
            condition.unlock()
        }
        t.name = name
        t.start()
    }

    public func stop() {
        condition.lock()
        stopped = true
        condition.broadcast()
        while !finished { condition.wait() }
        condition.unlock()
    }
}
