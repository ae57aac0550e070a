import Testing
@testable import MigrationEngine

/// What raw and compressed batches delivered, from synthetic writes: the leader,
/// the writes not counted after a switch, and the probe schedule.
@Suite struct DeliveryArmsTests {
    /// `count` writes of 1 MB of input at `rate` input bytes per second.
    func write(_ arms: inout DeliveryArms, _ arm: DeliveryArms.Arm, kind: DeliveryArms.Kind = .pages, rate: Double, count: Int,
               clock t: inout ContinuousClock.Instant) {
        for _ in 0..<count {
            t = t + .seconds(1e6 / rate)
            arms.recordWrite(arm, kind: kind, input: 1_000_000, at: t)
        }
    }

    /// (raw, compressed input rates, the leader): loopback, the receiver on this host
    /// (compressing slows it: raw); 1 Gbit/s with other work on the host (compressing
    /// delivers more); within the margin (compressing costs CPU for nothing: raw).
    @Test(arguments: [(300e6, 200e6, DeliveryArms.Arm.raw), (125e6, 230e6, .coded), (200e6, 225e6, .raw)])
    func theArmThatDeliveredMoreLeads(raw: Double, coded: Double, leader: DeliveryArms.Arm) {
        var (arms, t) = (DeliveryArms(), ContinuousClock.now)
        write(&arms, .raw, rate: raw, count: 30, clock: &t)
        write(&arms, .coded, rate: coded, count: 30, clock: &t)
        #expect(arms.leader(prior: .raw) == leader)
        #expect(abs(arms.rate(.coded)! - coded) < 1e6)
    }

    /// Raw input is wire bytes, so raw never delivers more than the network carries: a
    /// raw run that filled the socket's buffer at memory speed (measured 170 MB/s on a
    /// link that carries 120) is counted at the network's rate, and compressing, which
    /// delivered 150 MB/s of input, leads.
    @Test func rawDeliversNoMoreThanTheNetworkCarries() {
        var (arms, t) = (DeliveryArms(), ContinuousClock.now)
        write(&arms, .raw, rate: 170e6, count: 30, clock: &t)
        write(&arms, .coded, rate: 150e6, count: 30, clock: &t)
        #expect(arms.leader(prior: .raw) == .raw)
        arms.rawCeiling = 120e6
        #expect(arms.rate(.raw) == 120e6)
        #expect(arms.leader(prior: .raw) == .coded)
        #expect(arms.rate(.coded)! > 149e6, "the compressed arm is not capped")
    }

    /// Raw never measured, but compressing delivered more than raw could at best (the
    /// network's rate): compressing leads and no raw probe goes out (on a 1 Gbit/s link
    /// one sent 32 MiB raw to learn what TCP_INFO already said).
    @Test func noRawProbeWhenRawCannotWin() {
        var (arms, t) = (DeliveryArms(), ContinuousClock.now)
        arms.rawCeiling = 118e6
        write(&arms, .coded, rate: 300e6, count: 30, clock: &t)
        #expect(arms.rate(.raw) == nil && arms.leader(prior: .raw) == .coded)
        let picks = (0..<(4 * DeliveryArms.maxProbeEvery)).map { _ in arms.next(prior: .raw) }
        #expect(picks.allSatisfy { $0.arm == .coded })
        // A ceiling compressing does not beat by the margin: raw is worth measuring.
        arms.rawCeiling = 280e6
        #expect(arms.leader(prior: .raw) == .raw)
        #expect((0..<(2 * DeliveryArms.firstProbeAfter)).contains { _ in arms.next(prior: .raw).arm == .raw })
    }

    /// The first writes after a switch still drain the other arm's bytes: not counted.
    @Test func theFirstWritesOfARunAreNotCounted() {
        var (arms, t) = (DeliveryArms(), ContinuousClock.now)
        write(&arms, .raw, rate: 125e6, count: 30, clock: &t)
        write(&arms, .coded, rate: 900e6, count: DeliveryArms.settle, clock: &t)
        #expect(arms.rate(.coded) == nil)
        write(&arms, .coded, rate: 900e6, count: 1, clock: &t)
        #expect(arms.rate(.coded) != nil)
        #expect(arms.leader(prior: .raw) == .coded)
    }

    /// Until both are measured the model's expectation leads.
    @Test func beforeBothAreMeasuredThePriorLeads() {
        var (arms, t) = (DeliveryArms(), ContinuousClock.now)
        write(&arms, .raw, rate: 300e6, count: 30, clock: &t)
        #expect(arms.leader(prior: .coded) == .coded)
        #expect(arms.next(prior: .coded) == (.coded, false))
        write(&arms, .coded, rate: 200e6, count: 30, clock: &t)
        #expect(arms.leader(prior: .coded) == .raw)
    }

    @Test func controlFramesDoNotCount() {
        var (arms, t) = (DeliveryArms(), ContinuousClock.now)
        for _ in 0..<20 { t = t + .milliseconds(1); arms.recordWrite(.raw, input: 0, at: t) }
        #expect(arms.rate(.raw) == nil)
    }

    /// The leader's batches, a probe of the other arm after `firstProbeAfter` (again
    /// until the probes measured it, then every `probeEvery`), each `probeLength` long.
    @Test func probesComeOnSchedule() {
        var (arms, t) = (DeliveryArms(), ContinuousClock.now)
        let (lead, probe) = (DeliveryArms.firstProbeAfter, DeliveryArms.probeLength)
        let first = (0..<(lead + probe)).map { _ in arms.next(prior: .raw) }
        #expect(first.prefix(lead).allSatisfy { $0 == (.raw, false) })
        #expect(first[lead...].allSatisfy { $0 == (.coded, true) })
        write(&arms, .raw, rate: 125e6, count: 30, clock: &t)
        write(&arms, .coded, rate: 100e6, count: 30, clock: &t)
        write(&arms, .raw, rate: 125e6, count: 1, clock: &t)   // the leader goes out again
        let later = (0..<(DeliveryArms.probeEvery + probe + 10)).map { _ in arms.next(prior: .raw) }
        #expect(later.filter(\.probing).count == probe)
        #expect(later.firstIndex { $0.probing } == DeliveryArms.probeEvery)
        #expect(later.filter(\.probing).allSatisfy { $0.arm == .coded })
    }

    /// Loopback: device state reached the peer raw more slowly than compressed pages
    /// went; that raw rate says nothing about raw pages, so for pages the prior leads
    /// until raw pages are measured, and then they decide.
    @Test func eachKindOfDataHasItsOwnRates() {
        var (arms, t) = (DeliveryArms(), ContinuousClock.now)
        for _ in 0..<30 { t = t + .seconds(0.01); arms.recordWrite(.raw, kind: .deviceData, input: 1_000_000, at: t) }   // 100 MB/s
        write(&arms, .coded, rate: 200e6, count: 30, clock: &t)
        #expect(arms.rate(.raw) == nil)
        #expect(arms.rate(.raw, of: .deviceData).map { abs($0 - 100e6) < 1e6 } == true)
        #expect(arms.leader(prior: .raw) == .raw)
        write(&arms, .raw, rate: 300e6, count: 30, clock: &t)
        #expect(arms.leader(prior: .coded) == .raw)
    }

    /// The first pages after device state still drain its bytes: a new run, not counted.
    @Test func aChangeOfKindSettlesAgain() {
        var (arms, t) = (DeliveryArms(), ContinuousClock.now)
        for _ in 0..<30 { t = t + .seconds(0.01); arms.recordWrite(.raw, kind: .deviceData, input: 1_000_000, at: t) }
        write(&arms, .raw, rate: 300e6, count: DeliveryArms.settle, clock: &t)
        #expect(arms.rate(.raw) == nil)
        write(&arms, .raw, rate: 300e6, count: 1, clock: &t)
        #expect(arms.rate(.raw).map { abs($0 - 300e6) < 1e6 } == true)
    }

    /// When pages follow device state, their unmeasured arm is probed only after
    /// `firstProbeAfter` batches: time for the limit to settle the way being sent.
    @Test func aNewKindIsNotProbedAtOnce() {
        var (arms, t) = (DeliveryArms(), ContinuousClock.now)
        write(&arms, .coded, kind: .deviceData, rate: 50e6, count: 30, clock: &t)
        write(&arms, .raw, kind: .deviceData, rate: 100e6, count: 30, clock: &t)
        let device = (0..<(DeliveryArms.probeEvery / 2)).map { _ in arms.next(prior: .raw, limit: .receiver) }
        #expect(device.allSatisfy { $0 == (.raw, false) }, "device state measured both ways: no probe yet")
        write(&arms, .raw, rate: 300e6, count: 1, clock: &t)
        let picks = (0..<DeliveryArms.firstProbeAfter).map { _ in arms.next(prior: .raw, limit: .receiver) }
        #expect(picks.allSatisfy { $0 == (.raw, false) })
        #expect(arms.next(prior: .raw, limit: .sender) == (.raw, false), "sender-bound raw settles it")
    }
}
