import Testing
@testable import MigrationEngine
import MigrationWire

/// `auto`'s compressing cores from the host's idle CPU: /proc/stat parsed from fixed
/// text, the meter on synthetic readings, and the decisions they lead to.
@Suite struct IdleCoresTests {
    static let procStat = """
        cpu  1602713 62 396646 521991 5505 0 19974 6450 2 0
        cpu0 796703 31 193776 271236 1593 0 9953 3248 0 0
        cpu1 806010 31 202870 250754 3912 0 10020 3202 1 0
        intr 26828816 0 0 0
        ctxt 108822470
        """

    @Test func idleIsTheAggregateLinesIdlePlusIOWait() {
        #expect(HostCPUTimes.parse(procStat: Self.procStat) == HostCPUTimes(idleTicks: 521_991 + 5_505))
    }

    @Test func withoutAnAggregateLineThereIsNoReading() {
        #expect(HostCPUTimes.parse(procStat: "cpu0 1 2 3 4 5 6 7 8\nintr 1\n") == nil)
        #expect(HostCPUTimes.parse(procStat: "cpu  1 2 3\n") == nil)
        #expect(HostCPUTimes.parse(procStat: "cpu  1 2 x 4 5\n") == nil)
        #expect(HostCPUTimes.parse(procStat: "") == nil)
    }

    /// Readings one second apart at 100 ticks/s: 150 idle ticks are 1.5 idle cores;
    /// half a second of codec CPU would also be free without compression.
    @Test func theMeterAddsTheCodecsCPUToTheIdleCoresLessTheReserve() {
        var meter = IdleCoreMeter()
        let t0 = ContinuousClock.now
        meter.sample(HostCPUTimes(idleTicks: 1000), at: t0, ticksPerSecond: 100)
        #expect(meter.compressingCores == nil)
        meter.addCodecCPU(seconds: 0.5)
        meter.sample(HostCPUTimes(idleTicks: 1150), at: t0 + .seconds(1), ticksPerSecond: 100)
        #expect(meter.idleCores == 1.5)
        #expect(meter.codecCores == 0.5)
        #expect(meter.compressingCores == 1.5 + 0.5 - IdleCoreMeter.reserve)
    }

    /// /proc/stat counts 10 ms ticks: a 20 ms reading says nothing yet; readings that
    /// span `minimumSpanSeconds` do.
    @Test func readingsCountOnceTheySpanLongEnough() {
        var meter = IdleCoreMeter()
        let t0 = ContinuousClock.now
        meter.sample(HostCPUTimes(idleTicks: 1000), at: t0, ticksPerSecond: 100)
        meter.sample(HostCPUTimes(idleTicks: 1000), at: t0 + .milliseconds(20), ticksPerSecond: 100)
        #expect(meter.idleCores == nil, "0 ticks in 20 ms is rounding, not a busy host")
        meter.sample(HostCPUTimes(idleTicks: 1016), at: t0 + .milliseconds(120), ticksPerSecond: 100)
        #expect(meter.idleCores != nil)
        #expect(meter.compressingCores != nil)
    }

    /// A saturated host (5 idle ticks a second) does not count the codec's CPU as free:
    /// something else on it was waiting for that CPU.
    @Test func onASaturatedHostOnlyTheIdleCoresCount() {
        var meter = IdleCoreMeter()
        let t0 = ContinuousClock.now
        meter.sample(HostCPUTimes(idleTicks: 1000), at: t0, ticksPerSecond: 100)
        meter.addCodecCPU(seconds: 0.6)
        meter.sample(HostCPUTimes(idleTicks: 1005), at: t0 + .seconds(1), ticksPerSecond: 100)
        #expect(meter.compressingCores == 0.05)
    }

    /// Two cheap/strong levels (400 MB/s at 50 %, 100 MB/s at 40 %), fed through
    /// AdaptiveEncoding as the writer and the workers would.
    func decision(link: Double, idleTicksPerSecond: UInt64, codecCPU: Double, cores: Int = 2) -> EncodingDecision {
        let adaptive = AdaptiveEncoding(chooser: EncodingChooser(ladder: [
            .init(codec: .zstd(level: -1), prior: CodecRate(bytesPerSecond: 400e6, ratio: 0.5)),
            .init(codec: .zstd(level: 3), prior: CodecRate(bytesPerSecond: 100e6, ratio: 0.4)),
        ]), cores: cores)
        let t0 = ContinuousClock.now
        adaptive.recordDrain(bytes: UInt64(link), started: t0, ended: t0 + .seconds(1), cpu: .zero)
        for second in 0...10 {
            if second > 0 {
                adaptive.recordCompression(.zstd(level: -1), input: 4_000_000, output: 2_000_000, time: .milliseconds(10),
                                           cpu: .milliseconds(Int(codecCPU * 1000)))
            }
            adaptive.recordHostCPU(HostCPUTimes(idleTicks: UInt64(second) * idleTicksPerSecond), at: t0 + .seconds(second))
        }
        return adaptive.decide()
    }

    /// Sender and receiver on one host, the receiver the bottleneck: the link drains
    /// 250 MB/s, 0.05 cores idle while the codec takes a whole one. Compressing takes
    /// CPU the receiver needs (counting the codec's core as free would give 0.65 cores,
    /// 260 MB/s of input): raw, and the reason says why.
    @Test func sameHostBusyReceiverGetsRaw() {
        let d = decision(link: 250e6, idleTicksPerSecond: 5, codecCPU: 1.0)
        #expect(d.choice == .raw)
        #expect(d.reason.description.hasPrefix("idle cores 0.1: raw"))
    }

    /// The same link with 0.6 cores idle besides the codec's one is compressed: 1.2 cores
    /// of the cheap level deliver 480 MB/s of input.
    @Test func sameLinkWithIdleCoresGetsCompressed() {
        #expect(decision(link: 250e6, idleTicksPerSecond: 60, codecCPU: 1.0).choice == .codec(.zstd(level: -1)))
    }

    /// Separate hosts: the writer waits for a 1 Gbit/s link, 1.5 cores idle: compressed,
    /// with the idle cores in the reason.
    @Test func separateHostIdleCoresSlowLinkGetsCompressed() {
        let d = decision(link: 125e6, idleTicksPerSecond: 150, codecCPU: 0)
        #expect(d.choice == .codec(.zstd(level: -1)))
        #expect(d.reason.description.hasPrefix("idle cores 1.1: link moves 125 MB/s"))
    }

    /// With host readings, raw batches are not interrupted by remeasuring ones (one in
    /// 16) but by DeliveryArms' probe of compressed ones after `firstProbeAfter` raw ones.
    @Test func withReadingsProbesReplaceRemeasuring() {
        func codecBatches(idleTicksPerSecond: UInt64) -> [Int] {
            let adaptive = AdaptiveEncoding(chooser: EncodingChooser(zstdAccepted: true), cores: 2)
            let t0 = ContinuousClock.now
            adaptive.recordDrain(bytes: 2_000_000_000, started: t0, ended: t0 + .seconds(1), cpu: .zero)
            adaptive.recordHostCPU(HostCPUTimes(idleTicks: 0), at: t0)
            adaptive.recordHostCPU(HostCPUTimes(idleTicks: idleTicksPerSecond), at: t0 + .seconds(1))
            return (0..<80).filter { _ in adaptive.decide().choice != .raw }
        }
        let probe = Array(DeliveryArms.firstProbeAfter..<(DeliveryArms.firstProbeAfter + DeliveryArms.probeLength))
        #expect(codecBatches(idleTicksPerSecond: 5) == probe)
        #expect(codecBatches(idleTicksPerSecond: 50) == probe)
    }

    /// A saturated host whose compressed batches delivered more input than its raw ones
    /// (other work keeps the cores busy while a slow link waits) compresses, and says why.
    @Test func aSaturatedHostCompressesWhenThatDeliveredMore() {
        let adaptive = AdaptiveEncoding(chooser: EncodingChooser(zstdAccepted: true), cores: 2)
        var t = ContinuousClock.now
        adaptive.recordHostCPU(HostCPUTimes(idleTicks: 0), at: t)
        adaptive.recordHostCPU(HostCPUTimes(idleTicks: 2), at: t + .seconds(1))
        for (coded, rate) in [(false, 125e6), (true, 230e6)] {
            for _ in 0..<20 {
                let next = t + .seconds(1e6 / rate)
                adaptive.recordDrain(bytes: 1_000_000, started: t, ended: next, cpu: .zero, input: 1_000_000, coded: coded)
                t = next
            }
        }
        let d = adaptive.decide()
        #expect(d.choice == .codec(.zstd(level: -1)))
        #expect(d.reason.description == "idle cores 0.0: compressed (raw delivered 125 MB/s, compressed 230 MB/s of input)")
    }

    /// No readings (no /proc/stat): the workers' cores, at least one, as before.
    @Test func withoutReadingsTheWorkersModel() {
        let adaptive = AdaptiveEncoding(chooser: EncodingChooser(zstdAccepted: true), cores: 2)
        adaptive.recordDrain(bytes: 125_000_000, started: .now, ended: .now + .seconds(1), cpu: .zero)
        #expect(adaptive.decide().reason.description.hasPrefix("cores 2.0: "))
    }
}
