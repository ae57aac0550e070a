import Foundation
import SyncPrimitives
import Testing

@Suite struct LockVocabulary {
    @Test func lockedValueCountsExactlyUnderContention() {
        let counter = LockedValue(0)
        let done = DispatchGroup()
        for _ in 0..<4 {
            done.enter()
            Thread.detachNewThread {
                for _ in 0..<10_000 { counter.withLock { $0 += 1 } }
                done.leave()
            }
        }
        done.wait()
        #expect(counter.current == 40_000)
    }

    @Test func conditionWaiterWakesOnTheChangeItWaitsFor() {
        let state = ConditionValue(0)
        let seen = LockedValue<Int?>(nil)
        let finished = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            let got = state.wait(until: { $0 >= 3 }) { value, timedOut in timedOut ? -1 : value }
            seen.withLock { $0 = got }
            finished.signal()
        }
        for _ in 0..<3 { usleep(2_000); state.withLock { $0 += 1 } }
        #expect(finished.wait(timeout: .now() + 10) == .success)
        #expect(seen.current == 3)
    }

    @Test func conditionWaitReturnsAtTheDeadlineSayingSo() {
        let state = ConditionValue(false)
        let start = monotonicSeconds()
        let timedOut = state.wait(until: { $0 }, deadline: start + 0.05) { _, timedOut in timedOut }
        #expect(timedOut)
        #expect(monotonicSeconds() >= start + 0.05)
    }

    @Test func readyConditionDoesNotWaitEvenPastTheDeadline() {
        let state = ConditionValue(true)
        let timedOut = state.wait(until: { $0 }, deadline: monotonicSeconds() - 1) { _, timedOut in timedOut }
        #expect(!timedOut)
    }
}
