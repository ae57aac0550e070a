import MigrationTLS
import SyncPrimitives
import Testing
@testable import MigrationEngine

/// The delivery limit from synthetic TCP_INFO readings, what it settles in DeliveryArms,
/// and the reason `auto` gives with it.
@Suite struct DeliveryLimitTests {
    /// `count` readings `interval` apart, each adding `busy` and `stalled` shares of the
    /// interval to the kernel's counters (µs), starting from `info`.
    func feed(_ meter: inout DeliveryLimitMeter, busy: Double, stalled: Double, count: Int, from info: inout TCPInfo,
              clock t: inout ContinuousClock.Instant, interval: Duration = .milliseconds(50)) {
        let micros = Double(interval.components.attoseconds) / 1e12 + Double(interval.components.seconds) * 1e6
        for _ in 0..<count {
            t = t + interval
            info.busyMicroseconds += UInt64(busy * micros)
            info.receiveWindowLimitedMicroseconds += UInt64(stalled * micros)
            meter.sample(info, at: t)
        }
    }

    /// (busy, window-stalled shares, limit): 1 Gbit/s with bytes waiting; loopback with
    /// the receiver behind; a fast link waiting for our compression.
    @Test(arguments: [(1.0, 0.0, DeliveryLimit.network), (1.0, 0.9, .receiver), (0.5, 0.0, .sender), (0.9, 0.5, .receiver)])
    func sharesOfTheTimeTellTheLimit(busy: Double, stalled: Double, limit: DeliveryLimit) {
        var (meter, info, t) = (DeliveryLimitMeter(), TCPInfo.warm, ContinuousClock.now)
        feed(&meter, busy: busy, stalled: stalled, count: 12, from: &info, clock: &t)
        #expect(meter.limit == limit)
    }

    /// A limit counts once `stableReadings` readings agree, and a short change (a probe,
    /// a burst) does not replace it.
    @Test func aLimitNeedsReadingsThatAgree() {
        var (meter, info, t) = (DeliveryLimitMeter(), TCPInfo.warm, ContinuousClock.now)
        feed(&meter, busy: 1, stalled: 0, count: DeliveryLimitMeter.stableReadings, from: &info, clock: &t)
        #expect(meter.limit == nil, "the first reading only starts the window")
        feed(&meter, busy: 1, stalled: 0, count: 1, from: &info, clock: &t)
        #expect(meter.limit == .network)
        feed(&meter, busy: 0.2, stalled: 0, count: 2, from: &info, clock: &t)
        #expect(meter.limit == .network)
        feed(&meter, busy: 0.2, stalled: 0, count: 10, from: &info, clock: &t)
        #expect(meter.limit == .sender)
    }

    /// Until the connection carried `warmUpBytes` (handshake, HELLOs, slow start) its
    /// shares of busy time say nothing: no limit, though what it carried is measured.
    @Test func theLimitWaitsUntilTheConnectionWarmedUp() {
        var (meter, info, t) = (DeliveryLimitMeter(), TCPInfo(), ContinuousClock.now)
        for _ in 0..<10 {
            t = t + .milliseconds(50)
            info.busyMicroseconds += 10_000
            info.bytesAcked += 1 << 20
            meter.sample(info, at: t)
        }
        #expect(info.bytesAcked < DeliveryLimitMeter.warmUpBytes)
        #expect(meter.limit == nil, "a connection that only started reads as nothing yet")
        #expect(meter.carriedBytesPerSecond.map { abs($0 - 20_971_520) < 1 } == true)
        info.bytesAcked = DeliveryLimitMeter.warmUpBytes
        feed(&meter, busy: 0.2, stalled: 0, count: 12, from: &info, clock: &t)
        #expect(meter.limit == .sender)
    }

    /// Counters that go backwards are a new connection (after a resume): the window starts again.
    @Test func aNewConnectionStartsAgain() {
        var (meter, info, t) = (DeliveryLimitMeter(), TCPInfo(busyMicroseconds: 1 << 40, bytesAcked: DeliveryLimitMeter.warmUpBytes), ContinuousClock.now)
        feed(&meter, busy: 1, stalled: 0, count: 10, from: &info, clock: &t)
        #expect(meter.limit == .network)
        info = TCPInfo()
        feed(&meter, busy: 0.3, stalled: 0, count: 1, from: &info, clock: &t)
        #expect(meter.limit == nil)
    }

    /// The network's rate is the acknowledged bytes over the time between readings, over
    /// a decayed window; counters that go backwards are a new connection.
    @Test func theNetworkRateIsWhatWasAcknowledged() {
        var meter = DeliveryLimitMeter()
        var t = ContinuousClock.now
        meter.sample(TCPInfo(bytesAcked: 1_000_000), at: t)
        #expect(meter.carriedBytesPerSecond == nil)
        for k in 1...10 {
            t = t + .milliseconds(20)
            meter.sample(TCPInfo(busyMicroseconds: UInt64(k) * 20_000, bytesAcked: 1_000_000 + UInt64(k) * 2_400_000), at: t)
        }
        #expect(abs(meter.carriedBytesPerSecond! - 120e6) < 1)
        #expect(meter.limit == .network && abs(meter.networkBoundRate! - 120e6) < 1, "kept as what it carried while it set the pace")
        meter.sample(TCPInfo(busyMicroseconds: 200_000, bytesAcked: 10), at: t + .milliseconds(20))
        #expect(meter.carriedBytesPerSecond == nil)
    }

    /// When the socket starts to run dry, what was carried falls before the readings
    /// agree on `.sender`; the network's rate stays what it carried while busy throughout,
    /// so the sender-bound stretch after it is not capped at the fallen rate.
    @Test func theNetworkRateIgnoresReadingsThatRanDry() {
        var meter = DeliveryLimitMeter()
        var t = ContinuousClock.now
        var info = TCPInfo(bytesAcked: DeliveryLimitMeter.warmUpBytes)
        meter.sample(info, at: t)
        func readings(busy: Double, bytes: UInt64, count: Int) {
            for _ in 0..<count {
                t = t + .milliseconds(20)
                info.busyMicroseconds += UInt64(busy * 20_000)
                info.bytesAcked += bytes
                meter.sample(info, at: t)
            }
        }
        readings(busy: 1, bytes: 2_400_000, count: 10)
        #expect(meter.limit == .network)
        readings(busy: 0.5, bytes: 1_200_000, count: DeliveryLimitMeter.stableReadings + 2)
        #expect(meter.limit == .sender)
        #expect(meter.carriedBytesPerSecond! < 100e6, "what was carried fell")
        #expect(abs(meter.networkBoundRate! - 120e6) < 1, "the network's rate did not: \(meter.networkBoundRate!)")
    }

    /// While the network sets the pace (TCP_INFO network-bound), the link rate `auto`
    /// decides from is no more than the network carried: the socket's buffer taking the
    /// first megabytes at memory speed does not make a 1 Gbit/s link look like 1 GB/s.
    /// While we set the pace, the acknowledged rate is our own and the drain rate stands.
    @Test func aFullLinkIsNoFasterThanTheNetworkCarried() {
        func link(busy: Double) -> Double? {
            let adaptive = AdaptiveEncoding(chooser: EncodingChooser(zstdAccepted: true), cores: 2)
            var t = ContinuousClock.now
            adaptive.recordDrain(bytes: 1_000_000_000, started: t, ended: t + .seconds(1), cpu: .zero)
            var info = TCPInfo.warm
            for _ in 0..<10 {
                t = t + .milliseconds(20)
                info.bytesAcked += 2_500_000
                info.busyMicroseconds += UInt64(busy * 20_000)
                adaptive.recordTransport(info, at: t)
            }
            _ = adaptive.decide()
            return adaptive.report?.linkBytesPerSecond
        }
        #expect(abs(link(busy: 1)! - 125e6) < 1)
        #expect(link(busy: 0.3) == 1e9)
    }

    /// With the connection's TCP_INFO at hand, the link counts as not measured until it
    /// said what the network carried (two readings): the first writes fill the socket's
    /// buffer at memory speed and say nothing about the link.
    @Test func theLinkIsNotMeasuredBeforeTheNetworkSaidWhatItCarried() {
        let adaptive = AdaptiveEncoding(chooser: EncodingChooser(zstdAccepted: true), cores: 2, transport: { TCPInfo() })
        let t0 = ContinuousClock.now
        adaptive.recordDrain(bytes: 8_000_000, started: t0, ended: t0 + .milliseconds(8), cpu: .zero)
        #expect(adaptive.decide().reason == .linkNotMeasured)
        // Slow start: what was carried is known, but not yet what limits delivery.
        adaptive.recordTransport(TCPInfo(bytesAcked: 0), at: t0 + .milliseconds(10))
        adaptive.recordTransport(TCPInfo(bytesAcked: 2_500_000), at: t0 + .milliseconds(30))
        #expect(adaptive.decide().reason == .linkNotMeasured, "in the warm-up the carried rate reads low: no level from it")
        // On at 125 MB/s, past the warm-up and with readings that agree: network-bound.
        var info = TCPInfo(bytesAcked: 2_500_000)
        var i = 0
        while info.bytesAcked < DeliveryLimitMeter.warmUpBytes + 2_500_000 * UInt64(DeliveryLimitMeter.stableReadings + 1) {
            info.bytesAcked += 2_500_000
            info.busyMicroseconds += 20_000
            adaptive.recordTransport(info, at: t0 + .milliseconds(50 + 20 * i))
            i += 1
        }
        #expect(adaptive.decide().reason != .linkNotMeasured)
        let link = adaptive.report?.linkBytesPerSecond ?? .infinity
        #expect(link > 50e6 && link < 130e6, "capped by what was carried, not the drain's 1 GB/s: \(link)")
    }

    /// TCP_INFO is read every 5 ms until its readings agreed on a delivery limit (every
    /// batch goes at the cheapest level until then), and then every 20 ms like the host's
    /// CPU counters.
    @Test func theConnectionIsReadOftenUntilItsLimitIsKnown() {
        let reads = LockedValue((tcp: 0, host: 0))
        let current = LockedValue(TCPInfo())
        let adaptive = AdaptiveEncoding(chooser: EncodingChooser(zstdAccepted: true), cores: 2,
                                        hostCPU: { reads.withLock { $0.host += 1 }; return nil },
                                        transport: { reads.withLock { $0.tcp += 1 }; return current.current })
        var t = ContinuousClock.now
        func writes(_ count: Int) {
            for _ in 0..<count {
                adaptive.recordDrain(bytes: 1 << 20, started: t, ended: t + .milliseconds(5), cpu: .zero)
                t = t + .milliseconds(5)
            }
        }
        writes(40)
        #expect(reads.current.tcp == 40 && reads.current.host == 10, "no limit yet: \(reads.current)")
        // Network-bound readings past the warm-up (fed with their own times): the limit is known.
        var info = TCPInfo(bytesAcked: DeliveryLimitMeter.warmUpBytes)
        let t0 = ContinuousClock.now - .seconds(1)
        for i in 0..<(DeliveryLimitMeter.stableReadings + 2) {
            info.bytesAcked += 2_500_000
            info.busyMicroseconds += 20_000
            adaptive.recordTransport(info, at: t0 + .milliseconds(20 * i))
        }
        current.withLock { $0 = info }
        #expect(adaptive.decide().reason != .linkNotMeasured)
        reads.withLock { $0 = (0, 0) }
        writes(40)
        #expect(reads.current.tcp == 10 && reads.current.host == 10, "limit known: \(reads.current)")
    }

    /// `count` writes of 1 MB of input at `rate` input bytes per second.
    func write(_ arms: inout DeliveryArms, _ arm: DeliveryArms.Arm, rate: Double, count: Int, clock t: inout ContinuousClock.Instant) {
        for _ in 0..<count {
            t = t + .seconds(1e6 / rate)
            arms.recordWrite(arm, input: 1_000_000, at: t)
        }
    }

    /// Raw while the link waits for us, compressed while the link stays full: kept with
    /// no probe, whatever a stale rate of the other arm says.
    @Test(arguments: [(DeliveryArms.Arm.raw, DeliveryLimit.sender), (.coded, .network)])
    func aLimitThatSettlesTheWayBeingSentStopsProbes(arm: DeliveryArms.Arm, limit: DeliveryLimit) {
        var (arms, t) = (DeliveryArms(), ContinuousClock.now)
        let other: DeliveryArms.Arm = arm == .raw ? .coded : .raw
        write(&arms, other, rate: 900e6, count: 30, clock: &t)   // the other arm looked faster once
        write(&arms, arm, rate: 100e6, count: 30, clock: &t)
        let picks = (0..<(3 * DeliveryArms.maxProbeEvery)).map { _ in arms.next(prior: other, limit: limit) }
        #expect(picks.allSatisfy { $0 == (arm, false) })
    }

    /// A full link while raw goes out: compressed is expected to deliver more (before the
    /// arms are measured), where the model alone (a host without idle cores) said raw.
    @Test func aFullLinkPrefersCompressing() {
        var (arms, t) = (DeliveryArms(), ContinuousClock.now)
        write(&arms, .raw, rate: 125e6, count: 30, clock: &t)
        #expect(arms.next(prior: .raw, limit: .network) == (.coded, false))
        #expect(arms.next(prior: .raw, limit: .receiver) == (.raw, false))
    }

    /// After a probe's verdict, no probe while the limit and the model stay as they were
    /// (the backstop interval aside); one once the limit changed (`changedProbeAfter`
    /// batches after the last probe: here long past).
    @Test func probesComeBackWhenTheLimitChanges() {
        var (arms, t) = (DeliveryArms(), ContinuousClock.now)
        write(&arms, .raw, rate: 600e6, count: 30, clock: &t)
        let first = (0..<(DeliveryArms.firstProbeAfter + DeliveryArms.probeLength)).map { _ in arms.next(prior: .raw, limit: .receiver) }
        #expect(first.filter(\.probing).count == DeliveryArms.probeLength)
        write(&arms, .coded, rate: 300e6, count: 30, clock: &t)
        write(&arms, .raw, rate: 600e6, count: 1, clock: &t)
        let quiet = (0..<DeliveryArms.probeEvery).map { _ in arms.next(prior: .raw, limit: .receiver) }
        #expect(quiet.allSatisfy { $0 == (.raw, false) })
        #expect(arms.verdict == DeliveryArms.Verdict(leader: .raw, prior: .raw, limit: .receiver))
        #expect(arms.next(prior: .raw, limit: .network) == (.coded, true), "a full link now: compressing is measured again")
    }

    /// Each probe that kept the leader doubles the interval to the next one.
    @Test func probesThatKeepTheLeaderComeLessOften() {
        var (arms, t) = (DeliveryArms(), ContinuousClock.now)
        write(&arms, .raw, rate: 600e6, count: 30, clock: &t)
        write(&arms, .coded, rate: 300e6, count: 30, clock: &t)
        write(&arms, .raw, rate: 600e6, count: 1, clock: &t)
        var starts: [Int] = []
        var previous = false
        for k in 0..<4000 {
            let pick = arms.next(prior: .raw)
            if pick.probing && !previous { starts.append(k) }
            previous = pick.probing
        }
        let gaps = zip(starts.dropFirst(), starts).map { $0 - $1 - DeliveryArms.probeLength }
        #expect(gaps == [DeliveryArms.probeEvery, 2 * DeliveryArms.probeEvery])
    }

    /// The reason names the limit, so `progress` shows why no probe comes.
    @Test func theReasonNamesTheLimit() {
        let adaptive = AdaptiveEncoding(chooser: EncodingChooser(zstdAccepted: true), cores: 2)
        var t = ContinuousClock.now
        adaptive.recordHostCPU(HostCPUTimes(idleTicks: 0), at: t)
        adaptive.recordHostCPU(HostCPUTimes(idleTicks: 2), at: t + .seconds(1))
        var info = TCPInfo.warm
        for _ in 0..<10 {
            let next = t + .milliseconds(50)
            adaptive.recordDrain(bytes: 6_250_000, started: t, ended: next, cpu: .zero, input: 6_250_000, coded: false)
            info.busyMicroseconds += 50_000
            adaptive.recordTransport(info, at: next)
            t = next
        }
        let d = adaptive.decide()
        #expect(d.choice == .codec(.zstd(level: -1)))
        #expect(d.reason.description.hasPrefix("TCP: network-bound; idle cores 0.0: "))
    }

    /// `count` compressed batches' levels under `limit`.
    func levels(_ climb: inout LevelClimb, model: Int, affordable: Int = 3, limit: DeliveryLimit?, count: Int) -> [Int] {
        (0..<count).map { _ in climb.next(model: model, affordable: affordable, limit: limit) }
    }

    /// 1 Gbit/s: while the link stays full, one level up after each `settleBatches`,
    /// up to the highest the cores afford; no limit or a receiver limit: no step.
    @Test func aFullLinkClimbsTheLadder() {
        var climb = LevelClimb()
        let step = LevelClimb.settleBatches + 1
        let climbed = levels(&climb, model: 0, affordable: 2, limit: .network, count: 4 * step)
        #expect(climbed[step - 2] == 0)
        #expect(climbed[step - 1] == 1)
        #expect(climbed[2 * step - 1] == 2)
        #expect(climbed.last == 2, "not above the affordable level")
        var quiet = LevelClimb()
        #expect(levels(&quiet, model: 0, limit: nil, count: 4 * step).allSatisfy { $0 == 0 })
        #expect(levels(&quiet, model: 0, limit: .receiver, count: 4 * step).allSatisfy { $0 == 0 })
        #expect(levels(&quiet, model: 1, limit: .sender, count: 4 * step).allSatisfy { $0 == 1 }, "never below the model's level")
    }

    /// A level that runs the socket dry steps back, and is not tried again for
    /// `blockedFirst` batches; running it dry again bars it twice as long.
    @Test func aLevelThatRunsTheSocketDryStepsBack() {
        var climb = LevelClimb()
        let step = LevelClimb.settleBatches + 1
        _ = levels(&climb, model: 0, limit: .network, count: 2 * step)
        #expect(climb.level == 2)
        #expect(levels(&climb, model: 0, limit: .sender, count: step).last == 1)
        let held = levels(&climb, model: 0, limit: .network, count: LevelClimb.blockedFirst - step)
        #expect(held.allSatisfy { $0 == 1 })
        #expect(levels(&climb, model: 0, affordable: 2, limit: .network, count: 2 * step).last == 2, "tried again once the bar ran out")
        // Dry again: barred for twice as long, then tried again.
        #expect(levels(&climb, model: 0, limit: .sender, count: step).last == 1)
        let longer = levels(&climb, model: 0, affordable: 2, limit: .network, count: 2 * LevelClimb.blockedFirst - step)
        #expect(longer.allSatisfy { $0 == 1 })
        #expect(levels(&climb, model: 0, affordable: 2, limit: .network, count: 2 * step).last == 2)
    }

    /// The model choosing a level above the climb's while the link stays full holds it:
    /// its estimates swung between two levels batch by batch; only a dry socket steps back.
    @Test func aLevelTheModelChoseOnAFullLinkIsHeld() {
        var climb = LevelClimb()
        let step = LevelClimb.settleBatches + 1
        _ = levels(&climb, model: 1, affordable: 1, limit: .network, count: step)
        let swung = (0..<(4 * step)).map { k in climb.next(model: k % 2 == 0 ? 2 : 1, affordable: 1, limit: .network) }
        #expect(swung.suffix(2 * step).allSatisfy { $0 == 2 }, "\(swung)")
        #expect(levels(&climb, model: 1, affordable: 1, limit: .sender, count: step).last == 1, "a dry socket steps back")
    }

    /// After a step back, the socket the level above ran dry takes a while to fill: a
    /// further step back waits `settleAfterStepBack` settles unless the link read full
    /// in between.
    @Test func aStepBackIsNotFollowedByAnotherWhileTheSocketRefills() {
        var climb = LevelClimb()
        let step = LevelClimb.settleBatches + 1
        _ = levels(&climb, model: 0, limit: .network, count: 3 * step)
        #expect(climb.level == 3)
        #expect(levels(&climb, model: 0, limit: .sender, count: step).last == 2)
        let refilling = levels(&climb, model: 0, limit: .sender, count: (LevelClimb.settleAfterStepBack - 1) * step)
        #expect(refilling.allSatisfy { $0 == 2 }, "not read as level 2's fault yet")
        #expect(levels(&climb, model: 0, limit: .sender, count: 2 * step).last == 1, "still dry: steps back again")
    }

    /// Sender-bound, the writer may drain into the socket's buffer far faster than the
    /// network: the link is then no faster than what the network carried when it last
    /// set the pace.
    @Test(arguments: [false, true])
    func aSenderBoundLinkIsNoFasterThanTheNetworkWasWhenFull(longAgo: Bool) {
        let adaptive = AdaptiveEncoding(chooser: EncodingChooser(zstdAccepted: true), cores: 2)
        // Long ago (10 s): the link may have got faster since, and the cap is lifted.
        var t = ContinuousClock.now - .seconds(longAgo ? 10 : 0)
        var info = TCPInfo.warm
        func readings(busy: Double, count: Int) {
            for _ in 0..<count {
                t = t + .milliseconds(20)
                info.bytesAcked += 2_500_000
                info.busyMicroseconds += UInt64(busy * 20_000)
                adaptive.recordTransport(info, at: t)
            }
        }
        readings(busy: 1, count: 10)
        adaptive.recordDrain(bytes: 1_000_000_000, started: t, ended: t + .seconds(1), cpu: .zero)
        readings(busy: 0.3, count: 30)
        _ = adaptive.decide()
        let link = adaptive.report?.linkBytesPerSecond ?? 0
        #expect(abs(link - (longAgo ? 1e9 : 125e6)) < 1e6, "\(link)")
    }
}


extension TCPInfo {
    /// A reading of a connection past its warm-up (DeliveryLimitMeter.warmUpBytes).
    static var warm: TCPInfo { TCPInfo(bytesAcked: DeliveryLimitMeter.warmUpBytes) }
}
