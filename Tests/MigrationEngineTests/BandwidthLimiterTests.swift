import Foundation
import Testing
@testable import MigrationEngine

/// The limiter behind `--bandwidth` and `Sender.setBandwidth`: a new limit applies
/// at once and neither owes nor credits what was sent under the old one.
struct BandwidthLimiterTests {
    static func timed(_ body: () -> Void) -> Double {
        let start = ContinuousClock.now
        body()
        return (ContinuousClock.now - start).seconds
    }

    @Test func pacesAtTheLimitAndFollowsAChange() {
        let limiter = BandwidthLimiter(bytesPerSecond: 1_000_000)
        let slow = Self.timed { limiter.pace(afterWriting: 200_000) }
        #expect(slow >= 0.18 && slow < 0.5, "200 kB at 1 MB/s: \(slow) s")
        limiter.set(bytesPerSecond: 10_000_000)
        #expect(limiter.bytesPerSecond == 10_000_000)
        let fast = Self.timed { limiter.pace(afterWriting: 200_000) }
        #expect(fast >= 0.015 && fast < 0.1, "200 kB at 10 MB/s, nothing owed from before: \(fast) s")
        limiter.set(bytesPerSecond: nil)
        let free = Self.timed { limiter.pace(afterWriting: 100_000_000) }
        #expect(free < 0.01)
    }
}
