import Glibc

/// The one lock of this package: a pthread mutex on the heap (a `pthread_mutex_t`
/// must not move once initialised), used only through `withLock`.
///
/// A pthread mutex rather than `Synchronization.Mutex` or a futex: ThreadSanitizer
/// sees pthread locks and not Swift's `Mutex` on Linux, so the suite can run green
/// under `swift test --sanitize=thread` and a report there is a real race.
public final class Lock: @unchecked Sendable {  // owns a pthread_mutex_t
    fileprivate let mutex: UnsafeMutablePointer<pthread_mutex_t>

    public init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        precondition(pthread_mutex_init(mutex, nil) == 0, "pthread_mutex_init")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        mutex.deallocate()
    }

    public func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}

/// A value that is only ever read or changed with its lock held (swift-nio's
/// `NIOLockedValueBox`): the compiler then checks that no access forgets the lock.
public final class LockedValue<Value>: @unchecked Sendable {  // every access goes through `lock`
    private let lock = Lock()
    private var value: Value

    public init(_ value: Value) { self.value = value }

    public func withLock<T, E: Error>(_ body: (inout Value) throws(E) -> T) throws(E) -> T {
        try lock.withLock { () throws(E) -> T in try body(&value) }
    }

    /// A copy of the value now.
    public var current: Value { withLock { $0 } }
}

/// A value guarded by a lock plus a condition variable to wait for a change of it
/// (swift-nio's `ConditionLock` idea, with the predicate in the call): waiters
/// re-check their predicate under the lock after every wake-up, so a spurious or
/// stolen wake-up can never be mistaken for the condition.
public final class ConditionValue<Value>: @unchecked Sendable {  // owns a pthread_cond_t; state only under `lock`
    private let lock = Lock()
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        // CLOCK_MONOTONIC: a deadline must not move when the wall clock is set.
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        precondition(pthread_cond_init(condition, &attributes) == 0, "pthread_cond_init")
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        condition.deinitialize(count: 1)
        condition.deallocate()
    }

    /// Changes the value and wakes every waiter to re-check its predicate.
    public func withLock<T, E: Error>(_ body: (inout Value) throws(E) -> T) throws(E) -> T {
        try lock.withLock { () throws(E) -> T in
            defer { pthread_cond_broadcast(condition) }
            return try body(&value)
        }
    }

    /// Waits until `ready(value)` holds, then runs `body` with the lock still held.
    /// `deadline` is in `monotonicSeconds()`; past it, `body` runs anyway and gets
    /// `timedOut == true` (so the caller decides what a timeout means).
    public func wait<T, E: Error>(until ready: (Value) -> Bool, deadline: Double? = nil,
                                  _ body: (inout Value, _ timedOut: Bool) throws(E) -> T) throws(E) -> T {
        try lock.withLock { () throws(E) -> T in
            while !ready(value) {
                guard let deadline else { pthread_cond_wait(condition, lock.mutex); continue }
                if monotonicSeconds() >= deadline { return try body(&value, true) }
                var time = timespec(tv_sec: Int(deadline), tv_nsec: Int((deadline - deadline.rounded(.down)) * 1e9))
                _ = pthread_cond_timedwait(condition, lock.mutex, &time)
            }
            defer { pthread_cond_broadcast(condition) }
            return try body(&value, false)
        }
    }
}

/// Seconds on CLOCK_MONOTONIC (never jumps with the wall clock).
public func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}
