import Foundation
import Testing
@testable import vfio_migrate_bench

/// Rows as the runner makes them, with only the figures the goals read.
enum Rows {
    static let gib: UInt64 = 1 << 30
    static let ourBytes = gib + gib / 4   // 1 GiB guest + 256 MiB device state

    static func ours(_ mode: String, _ seconds: Double, run: Int = 1, downtime: Double = 100, converged: Bool = true,
                     rss: UInt64 = 20 << 20, verified: Bool = true) -> BenchRow {
        var r = BenchRow(name: "migrate --compress \(mode)", kind: "migration", mode: mode)
        (r.run, r.wallSeconds, r.corpusBytes, r.downtimeMs, r.converged) = (run, seconds, ourBytes, downtime, converged)
        (r.rssAnonSource, r.rssAnonDestination, r.verified) = (rss, rss, verified)
        if !verified { r.problems = ["guest memory differs between source and destination"] }
        return r
    }

    static func qemu(_ c: QemuCase, _ seconds: Double, run: Int = 1, completed: Bool = true) -> BenchRow {
        var r = BenchRow(name: c.title, kind: "qemu", mode: c.rawValue)
        (r.run, r.wallSeconds, r.corpusBytes, r.verified) = (run, seconds, gib, completed)
        return r
    }

    static let loopback = BenchLink.loopback
    static let slow = BenchLink(name: "1gbit", bitsPerSecond: 1_000_000_000)
    static let middle = BenchLink(name: "2gbit", bitsPerSecond: 2_000_000_000)

    static func verdicts(_ l: LinkSummary) -> [String: BenchTarget.Verdict] {
        Dictionary(BenchGoals.evaluate([l], downtimeTargetMs: 300).map { ($0.name, $0.verdict) }, uniquingKeysWith: { a, _ in a })
    }
}

@Suite struct MediansAndRatios {
    @Test func medianOfOddAndEvenCounts() {
        #expect(median([3, 1, 2]) == 2)
        #expect(median([4, 1, 3, 2]) == 2.5)
        #expect(median([]) == nil)
    }

    @Test func medianIgnoresFailedRunsAndNamesTheMedianRun() {
        let row = RowSummary(runs: [Rows.ours("none", 3, run: 1), Rows.ours("none", 1, run: 2, verified: false), Rows.ours("none", 2, run: 3),
                                    Rows.ours("none", 5, run: 4)])
        #expect(row.medianSeconds == 3)         // of 2, 3, 5
        #expect(row.medianRun?.run == 1)
        #expect(row.verified.count == 3)
    }

    /// Issue 14's worked example: QEMU TLS 1.08 s for 1 GiB, ours 1.33 s for 1.25 GiB = 1.02 ×.
    @Test func perByteRatioCreditsOurDeviceState() throws {
        let ours = RowSummary(runs: [Rows.ours("none", 1.33)]), qemu = RowSummary(runs: [Rows.qemu(.tls, 1.08)])
        let r = try #require(LinkSummary.perByteRatio(ours, over: qemu))
        #expect(abs(r - (1.08 / 1) / (1.33 / 1.25)) < 1e-12)
        #expect(abs(r - 1.015) < 0.001)
    }

    @Test func qemuBestIsTheFastestPerByteThatCompleted() {
        let l = LinkSummary(link: Rows.loopback, runs: [Rows.qemu(.tls, 1.08), Rows.qemu(.multifdZstd, 0.5, completed: false),
                                                        Rows.qemu(.multifdZstd, 1.57, run: 2)])
        #expect(l.qemuBest?.mode == QemuCase.tls.rawValue)
        #expect(l.qemu(.multifdZstd)?.medianSeconds == 1.57)
    }

    @Test func rowsKeepTheirFirstSeenOrder() {
        let l = LinkSummary(link: Rows.loopback, runs: [Rows.ours("none", 1), Rows.ours("auto", 2), Rows.qemu(.tls, 1),
                                                        Rows.ours("none", 1, run: 2), Rows.ours("auto", 2, run: 2), Rows.qemu(.tls, 1, run: 2)])
        #expect(l.rows.map(\.mode) == ["none", "auto", "qemu-tls"])
        #expect(l.rows.map(\.runs.count) == [2, 2, 2])
    }
}

@Suite struct GoalEvaluation {
    @Test func fastLinkNeedsOneAndAHalfTimesQemusBestForNoneAndAuto() {
        // QEMU TLS: 1 GiB in 1 s. none: 1.25 GiB in 0.8 s = 1.5625 ×; auto: 1.25 GiB in 0.9 s = 1.39 ×.
        let l = LinkSummary(link: Rows.loopback, runs: [Rows.ours("none", 0.8), Rows.ours("auto", 0.9), Rows.qemu(.tls, 1), Rows.qemu(.multifdZstd, 1.5)])
        let v = Rows.verdicts(l)
        #expect(v["loopback: none ≥ 1.5 × QEMU's best mode per byte"] == .pass)
        #expect(v["loopback: auto ≥ 1.5 × QEMU's best mode per byte"] == .fail)
        #expect(v["loopback: auto at least as fast as our best fixed setting"] == .fail)
        #expect(v.keys.allSatisfy { !$0.contains("multifd zstd") }, "the 1.1 × zstd goal is the slow link's")
    }

    @Test func slowLinkComparesAutoWithQemusZstd() {
        // zstd: 1 GiB in 4.11 s; auto 1.25 GiB in 4.5 s = 1.14 ×.
        let l = LinkSummary(link: Rows.slow, runs: [Rows.ours("none", 9.47), Rows.ours("auto", 4.5), Rows.qemu(.tls, 3), Rows.qemu(.multifdZstd, 4.11)])
        let v = Rows.verdicts(l)
        #expect(v["1gbit: auto ≥ 1.1 × QEMU multifd zstd per byte"] == .pass)
        #expect(v["1gbit: auto at least as fast as our best fixed setting"] == .pass)
        #expect(v.keys.allSatisfy { !$0.contains("best mode") }, "the 1.5 × goal is the fast links'")
        let slower = LinkSummary(link: Rows.slow, runs: [Rows.ours("auto", 5.35), Rows.qemu(.multifdZstd, 4.11)])
        #expect(Rows.verdicts(slower)["1gbit: auto ≥ 1.1 × QEMU multifd zstd per byte"] == .fail)
    }

    @Test func withoutQemuTheQemuGoalsAreNotEvaluated() {
        let l = LinkSummary(link: Rows.loopback, runs: [Rows.ours("none", 1), Rows.ours("auto", 1)])
        let t = BenchGoals.evaluate([l], downtimeTargetMs: 300)
        #expect(t.filter { $0.name.contains("QEMU") }.allSatisfy { $0.verdict == .notEvaluated })
        #expect(t.filter { $0.name.contains("QEMU") }.count == 2)
        #expect(t.allSatisfy { $0.pass }, "not evaluated is not a failure")
    }

    @Test func aLinkBetweenTheNamedRatesHasNoQemuGoal() {
        let l = LinkSummary(link: Rows.middle, runs: [Rows.ours("auto", 1), Rows.qemu(.multifdZstd, 0.1)])
        #expect(BenchGoals.evaluate([l], downtimeTargetMs: 300).allSatisfy { !$0.name.contains("QEMU") })
    }

    @Test func memoryDowntimeAndVerificationCoverEveryRunOfOurs() {
        let l = LinkSummary(link: Rows.loopback, runs: [
            Rows.ours("none", 1, run: 1, downtime: 460),                     // over 1.5 × 300
            Rows.ours("none", 1, run: 2, downtime: 900, converged: false),   // told the operator: exempt
            Rows.ours("auto", 1, rss: 129 << 20),
            Rows.ours("auto", 1, run: 2, verified: false),
        ])
        let v = Rows.verdicts(l)
        #expect(v["loopback: downtime ≤ 1.5 × --downtime-ms (450 ms)"] == .fail)
        #expect(v["loopback: peak RssAnon ≤ 128 MiB per side"] == .fail)
        #expect(v["loopback: every migration of ours verified byte for byte"] == .fail)
        let fine = LinkSummary(link: Rows.loopback, runs: [Rows.ours("none", 1, downtime: 440), Rows.ours("none", 1, run: 2, downtime: 900, converged: false)])
        let w = Rows.verdicts(fine)
        #expect(w["loopback: downtime ≤ 1.5 × --downtime-ms (450 ms)"] == .pass)
        #expect(w["loopback: peak RssAnon ≤ 128 MiB per side"] == .pass)
        #expect(w["loopback: every migration of ours verified byte for byte"] == .pass)
    }

    @Test func autoIsComparedWithEveryFixedModeThatRan() {
        let l = LinkSummary(link: Rows.slow, runs: [Rows.ours("none", 9), Rows.ours("zstd:3", 4), Rows.ours("auto", 4.2)])
        let t = BenchGoals.autoIsBest(l)
        #expect(t.verdict == .fail && t.detail.contains("zstd:3"))
        #expect(t.detail.hasSuffix("+0.200 s, +5.0 %"), "\(t.detail)")
        let alone = LinkSummary(link: Rows.slow, runs: [Rows.ours("auto", 4.2)])
        #expect(BenchGoals.autoIsBest(alone).verdict == .notEvaluated)
    }

    @Test func skippedLinksHaveNoGoals() {
        let l = LinkSummary(link: Rows.slow, runs: [], note: "shaped links need root")
        #expect(BenchGoals.evaluate([l], downtimeTargetMs: 300).isEmpty)
    }
}

@Suite struct CPUPerByte {
    @Test func bothSidesOfTheMedianRunPerGiBMoved() throws {
        var a = Rows.ours("none", 2, run: 1), b = Rows.ours("none", 1, run: 2), c = Rows.ours("none", 3, run: 3)
        (a.cpuSource, a.cpuDestination) = (2.0, 0.5)      // the median run (2 s)
        (b.cpuSource, b.cpuDestination) = (9, 9)
        (c.cpuSource, c.cpuDestination) = (9, 9)
        let row = RowSummary(runs: [a, b, c])
        #expect(row.cpuSecondsPerGiB == 2.5 / 1.25)
        #expect(RowSummary(runs: [Rows.qemu(.tls, 1)]).cpuSecondsPerGiB == nil, "no CPU figures, no ratio")
    }
}
