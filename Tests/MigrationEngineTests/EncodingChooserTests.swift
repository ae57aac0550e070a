import Testing
@testable import MigrationEngine
import MigrationTLS
import MigrationWire

/// `auto`'s per-batch choice on synthetic rates (no clock, no network): raw when the
/// link outruns every level, the best ratio the cores keep the link full with when it
/// is slow, and a cheaper level in between.
@Suite struct EncodingChooserTests {
    /// Two levels with round numbers: cheap (400 MB/s, 50 %) and strong (100 MB/s, 40 %).
    let chooser = EncodingChooser(ladder: [
        .init(codec: .zstd(level: -1), prior: CodecRate(bytesPerSecond: 400e6, ratio: 0.5)),
        .init(codec: .zstd(level: 3), prior: CodecRate(bytesPerSecond: 100e6, ratio: 0.4)),
    ])

    func decide(link: Double?, threads: Int = 1, measured: [PayloadCodec: CodecRate] = [:]) -> EncodingDecision {
        chooser.decide(EncodingRates(linkBytesPerSecond: link, codecs: measured, cores: CoreBudget(cores: Double(threads), measured: false)))
    }

    @Test func aFastLinkGetsRawBytes() {
        // 1 GB/s link: raw moves 1 GB/s of input; the cheap level at most 400 MB/s.
        let d = decide(link: 1e9)
        #expect(d.choice == .raw)
        #expect(d.reason == .linkFasterThanCodecs(link: 1e9, bestCodec: 400e6, cores: CoreBudget(cores: 1, measured: false)))
    }

    @Test func aSlowLinkGetsTheBestRatioTheCoresAfford() {
        // 20 MB/s: both levels keep it full (cheap: 40 MB/s of input, strong: 50 MB/s): the strong one.
        let d = decide(link: 20e6)
        #expect(d.choice == .codec(.zstd(level: 3)))
        #expect(d.reason == .linkBound(link: 20e6, codec: 50e6, ratio: 0.4, cores: CoreBudget(cores: 1, measured: false)))
    }

    @Test func inBetweenTheCheaperLevelWins() {
        // 150 MB/s: raw 150, cheap min(400, 300) = 300, strong min(100, 375) = 100 of input.
        #expect(decide(link: 150e6).choice == .codec(.zstd(level: -1)))
        // The same link with four cores: strong gives min(400, 375) = 375 > cheap's 300.
        #expect(decide(link: 150e6, threads: 4).choice == .codec(.zstd(level: 3)))
    }

    @Test func beforeTheFirstWriteTheCheapestLevel() {
        let d = decide(link: nil)
        #expect(d.choice == .codec(.zstd(level: -1)))
        #expect(d.reason == .linkNotMeasured)
    }

    /// A busy machine: the cheap level measured at a quarter of its prior makes the
    /// strong one (not measured) a quarter as fast too, and raw wins on a link that
    /// would have been compressed on an idle machine.
    @Test func measuredRatesScaleTheLevelsNotMeasured() {
        let slow: [PayloadCodec: CodecRate] = [.zstd(level: -1): CodecRate(bytesPerSecond: 100e6, ratio: 0.5)]
        let estimates = chooser.estimates(EncodingRates(linkBytesPerSecond: 1, codecs: slow))
        #expect(estimates.map(\.rate) == [CodecRate(bytesPerSecond: 100e6, ratio: 0.5), CodecRate(bytesPerSecond: 25e6, ratio: 0.4)])
        #expect(decide(link: 150e6).choice == .codec(.zstd(level: -1)))
        #expect(decide(link: 150e6, measured: slow).choice == .raw)
    }

    /// The strong level ran a few batches long ago (slowly, on data that compressed
    /// worse); the cheap one runs now at its prior. The levels are compared through one
    /// scale weighted by recent input, so the strong level's old figures weigh little:
    /// it is estimated at about its prior again, and a slow link gets it. Taken at its
    /// own figures (25 MB/s, 48 %) it lost to the cheap level for good.
    @Test func oldFiguresOfALevelDoNotFreezeItOut() {
        let measured: [PayloadCodec: CodecRate] = [
            .zstd(level: 3): CodecRate(bytesPerSecond: 25e6, ratio: 0.48, weight: 1e6),
            .zstd(level: -1): CodecRate(bytesPerSecond: 400e6, ratio: 0.5, weight: 1e9),
        ]
        let strong = chooser.estimates(EncodingRates(linkBytesPerSecond: 1, codecs: measured))[1].rate
        #expect(strong.bytesPerSecond > 99e6 && strong.ratio < 0.41)
        #expect(decide(link: 30e6, measured: measured).choice == .codec(.zstd(level: 3)))
        // The same figures as the only ones: the scale follows them.
        let alone = [PayloadCodec.zstd(level: 3): CodecRate(bytesPerSecond: 25e6, ratio: 0.48, weight: 1e6)]
        #expect(chooser.estimates(EncodingRates(linkBytesPerSecond: 1, codecs: alone))[1].rate == CodecRate(bytesPerSecond: 25e6, ratio: 0.48))
    }

    /// Data that compresses worse than the priors (measured 97 %: it would go out raw
    /// anyway) makes compression not worth it on a link where the priors would compress.
    @Test func incompressibleDataGoesRaw() {
        let poor: [PayloadCodec: CodecRate] = [.zstd(level: -1): CodecRate(bytesPerSecond: 400e6, ratio: 0.97)]
        #expect(decide(link: 150e6).choice == .codec(.zstd(level: -1)))
        #expect(decide(link: 150e6, measured: poor).choice == .raw)
    }

    @Test func withoutZstdTheLadderIsDeflate() {
        #expect(EncodingChooser(zstdAccepted: false).ladder.allSatisfy { if case .deflate = $0.codec { true } else { false } })
        #expect(EncodingChooser(zstdAccepted: true).ladder.allSatisfy { if case .zstd = $0.codec { true } else { false } })
    }

    /// The writer's CPU share is taken off the cores that compress. 150 MB/s link, three
    /// cores: with the writer idle the strong level keeps up (min(300, 375) ties the cheap
    /// one's 300, and wins on ratio); with the writer busy all the time two cores are left
    /// and the strong level (200) falls behind the cheap one (300).
    @Test func theWritersCPUShareIsNotForCompression() {
        func decision(writerBusy: Double) -> CodecChoice {
            let a = AdaptiveEncoding(chooser: chooser, cores: 3)
            let t0 = ContinuousClock.now
            for k in 0..<200 {
                let start = t0 + .milliseconds(100 * k)
                a.recordDrain(bytes: 15_000_000, started: start, ended: start + .milliseconds(100), cpu: .milliseconds(Int(100 * writerBusy)))
            }
            return a.decide().choice
        }
        #expect(decision(writerBusy: 0) == .codec(.zstd(level: 3)))
        #expect(decision(writerBusy: 1) == .codec(.zstd(level: -1)))
    }

    /// A level measured on a busy moment is measured again while raw wins: one batch in 16.
    @Test func rawBatchesKeepTheCodecMeasured() {
        let adaptive = AdaptiveEncoding(chooser: chooser, cores: 1)
        adaptive.recordDrain(bytes: 1_000_000_000, started: .now, ended: .now + .seconds(1), cpu: .zero)
        let choices = (0..<32).map { _ in adaptive.decide() }
        #expect(choices.filter { $0.choice == .raw }.count == 30)
        #expect(choices[15] == EncodingDecision(choice: .codec(.zstd(level: -1)), reason: .remeasuring))
        #expect(choices[31].reason == .remeasuring)
    }

    /// The shared measurements: the writer's drain and the workers' codec rates lead to the decision.
    @Test func adaptiveEncodingDecidesFromWhatWasRecorded() {
        let adaptive = AdaptiveEncoding(chooser: chooser, cores: 1)
        #expect(adaptive.decide().reason == .linkNotMeasured)
        adaptive.recordDrain(bytes: 1_000_000_000, started: .now, ended: .now + .seconds(1), cpu: .zero)
        #expect(adaptive.decide().choice == .raw)
        adaptive.recordCompression(.zstd(level: -1), input: 40_000_000, output: 20_000_000, time: .milliseconds(100))
        for _ in 0..<400 { adaptive.recordDrain(bytes: 10_000_000, started: .now, ended: .now + .milliseconds(500), cpu: .zero) }   // the link slows to 20 MB/s
        #expect(adaptive.decide().choice == .codec(.zstd(level: 3)))
        let report = adaptive.report
        #expect(report?.choice == "zstd:3")
        #expect(report?.batches == ["raw": 1, "zstd:-1": 1, "zstd:3": 1])
        #expect(report.map { abs($0.linkBytesPerSecond! - 20e6) < 1e6 } == true)
    }

    /// The highest level worth a climb: its rate on all cores keeps the link full, within
    /// `affordableShortfall` (here: the strong level at 100 MB/s, 40 %, on 2 cores keeps
    /// 80 MB/s of link full, and 100 MB/s within the shortfall; not 200 MB/s).
    @Test(arguments: [(80e6, 2.0, 1), (100e6, 2.0, 1), (200e6, 2.0, 0), (100e6, 1.0, 0)])
    func theHighestAffordableLevel(link: Double, threads: Double, level: Int) {
        let rates = EncodingRates(linkBytesPerSecond: link, cores: CoreBudget(cores: 0, measured: true))
        #expect(chooser.highestAffordable(rates, threads: threads) == level)
    }

    /// Compressed batches' choices on a full 1 Gbit/s link (TCP_INFO network-bound while
    /// they go out), the host showing `idleTicks` idle ticks over one second.
    func choicesOnAFullLink(idleTicks: UInt64) -> [CodecChoice] {
        let t0 = ContinuousClock.now
        let adaptive = AdaptiveEncoding(chooser: chooser, cores: 2)
        adaptive.recordHostCPU(HostCPUTimes(idleTicks: 0), at: t0)
        adaptive.recordHostCPU(HostCPUTimes(idleTicks: idleTicks), at: t0 + .seconds(1))
        var info = TCPInfo.warm
        for i in 0..<8 {
            info.busyMicroseconds += 50_000
            adaptive.recordTransport(info, at: t0 + .milliseconds(50 * (i + 1)))
        }
        var t = t0 + .seconds(1)
        for _ in 0..<30 {
            t = t + .milliseconds(10)
            adaptive.recordDrain(bytes: 500_000, started: t - .milliseconds(5), ended: t, cpu: .zero, input: 1_000_000, coded: true)
        }
        return (0..<(2 * LevelClimb.settleBatches)).map { _ in adaptive.decide().choice }
    }

    /// 1 Gbit/s on a saturated host (no idle cores: the model says the cheapest level):
    /// once TCP_INFO reads network-bound while compressed batches go out, they climb
    /// to the stronger level.
    @Test func aFullLinkWhileCompressingClimbs() {
        let choices = choicesOnAFullLink(idleTicks: 0)
        #expect(choices.first == .codec(.zstd(level: -1)))
        #expect(choices.last == .codec(.zstd(level: 3)))
    }

    /// The same full link, but the host has half a core idle and is not saturated: the
    /// stronger level would need more than that (and the reserve) to keep the link full,
    /// so it is not tried (a try runs the socket dry before it steps back).
    @Test func aLevelTheIdleCoresCannotSustainIsNotTried() {
        let choices = choicesOnAFullLink(idleTicks: 50)
        #expect(choices.allSatisfy { $0 == .codec(.zstd(level: -1)) }, "\(Set(choices.map(\.description)))")
    }
}
