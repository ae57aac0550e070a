/// Input bytes per second the writer delivered while batches went raw and while they
/// were compressed: outcomes, not a model. On a host without idle cores the model
/// cannot tell a receiver on the same host that needs the CPU (compressing slows
/// everything: raw wins) from other work on it while a slow link waits (our workers
/// still get their share of the CPU, and compressing wins); measuring both tells.
/// Measuring the other arm costs batches sent the slower way, so a probe comes only
/// when what the last one settled may have changed: the delivery limit TCP_INFO shows
/// (DeliveryLimit) or the model's expectation differs from when it was settled, or a
/// long backstop interval passed. Where the limit decides by itself (raw while the link
/// waits for us, compressed while the link stays full) the way being sent stays, unprobed.
/// Rates are kept per kind of data: device state reaches the peer at its own pace
/// (on loopback more slowly than pages), so raw measured during it must not decide
/// how pages go, nor the reverse.
/// Pure: writes, their instants and the limit come in as values.
struct DeliveryArms: Sendable {
    enum Arm: Sendable, Equatable { case raw, coded }
    /// What a batch carries: DEVICE_DATA pieces or guest pages.
    enum Kind: Sendable, Hashable { case deviceData, pages }
    private struct Key: Hashable { var kind: Kind; var arm: Arm }

    /// About the last 10 counted writes of an arm.
    static let decay = 0.9
    /// The first writes of a run of one arm are not counted: the socket's buffer and
    /// the receiver still hold the other arm's bytes (tens of MiB on loopback).
    static let settle = 12
    /// Batches of the other arm in a probe: `settle` and some to count.
    static let probeLength = 32
    /// The first probe, when the other arm was never measured and the limit does not decide.
    static let firstProbeAfter = 32
    /// Batches of the leader before a probe while nothing changed; doubles after each
    /// probe that kept the leader, up to `maxProbeEvery`.
    static let probeEvery = 512
    static let maxProbeEvery = 4096
    /// Batches of the leader before a probe once the conditions of the last verdict changed
    /// (not fewer: a limit or a model near its threshold must not make probes back to back).
    static let changedProbeAfter = 128
    /// Compressing must deliver this much more than raw to lead: it costs CPU, and on
    /// loopback a probe's rate still gains a little from the raw bytes before it.
    static let margin = 0.15

    /// What a probe settled, and under which conditions: while they hold, no new probe.
    struct Verdict: Sendable, Equatable {
        var leader: Arm
        var prior: Arm
        var limit: DeliveryLimit?
    }

    private var delivered: [Key: AdaptiveEncoding.DecayedRate] = [:]
    private var last: (arm: Arm, kind: Kind, at: ContinuousClock.Instant, run: Int)?
    private var sinceProbe = 0
    private var probe: (arm: Arm, left: Int)?
    /// Batches until a finished probe's writes are counted and its verdict is taken.
    private var verdictIn: Int?
    private(set) var verdict: Verdict?
    private var interval = DeliveryArms.probeEvery

    /// The writer wrote a batch of `input` payload bytes of `arm` and `kind`, finishing
    /// `at`. Control frames (no payload) do not count. A change of kind starts a new run
    /// like a change of arm (the socket still holds the other kind's bytes), and the
    /// first probe of the new kind waits `firstProbeAfter` batches, so the limit can
    /// settle the way being sent first (10 Gbit/s: sender-bound raw pages, no probe).
    mutating func recordWrite(_ arm: Arm, kind: Kind = .pages, input: UInt64, at end: ContinuousClock.Instant) {
        guard input > 0 else { return }
        if let last, last.kind != kind { sinceProbe = 0 }
        let run = last.map { $0.arm == arm && $0.kind == kind ? $0.run + 1 : 1 } ?? 1
        if let last, run > DeliveryArms.settle, end > last.at {
            delivered[Key(kind: kind, arm: arm), default: .init()].add(bytes: Double(input), seconds: (end - last.at).seconds, decay: DeliveryArms.decay)
        }
        last = (arm, kind, end, run)
    }

    /// The most input per second raw batches can deliver: what the network carries (raw
    /// input is wire bytes), from TCP_INFO (`DeliveryLimitMeter`; while the sender sets
    /// the pace, what it carried when it last set the pace itself); nil without readings.
    /// A raw run measured faster was the socket's send buffer taking bytes at memory
    /// speed (a probe right after compressed batches, which left the buffer room), and
    /// with it raw "delivered" 150–170 MB/s of input on a 1 Gbit/s link and kept the
    /// lead while the link stayed full (issue 14).
    var rawCeiling: Double?

    /// Input bytes per second measured for `arm` on the kind of data being sent now, nil before it was.
    func rate(_ arm: Arm) -> Double? { rate(arm, of: last?.kind ?? .pages) }

    func rate(_ arm: Arm, of kind: Kind) -> Double? {
        let measured = delivered[Key(kind: kind, arm: arm)]?.perSecond
        guard arm == .raw, let ceiling = rawCeiling else { return measured }
        return measured.map { min($0, ceiling) }
    }

    /// Both arms were measured.
    var measured: Bool { rate(.raw) != nil && rate(.coded) != nil }

    /// The arm of the latest write: what the link's limit was read under.
    var sending: Arm? { last?.arm }

    /// Once both are measured, raw unless compressing delivered more by `margin`;
    /// before, `prior` (what the model or the limit expects).
    func leader(prior: Arm) -> Arm {
        guard let coded = rate(.coded) else { return prior }
        if let raw = rate(.raw) { return coded > raw * (1 + DeliveryArms.margin) ? .coded : .raw }
        return rawCannotWin ? .coded : prior
    }

    /// Compressing delivered more than raw could at best (the network's rate): raw
    /// needs no measuring, so no raw probe, which on a 1 Gbit/s link sent 32 MiB raw.
    private var rawCannotWin: Bool {
        guard let ceiling = rawCeiling, let coded = rate(.coded) else { return false }
        return coded > ceiling * (1 + DeliveryArms.margin)
    }

    /// The arm for the next batch: the leader, or `probeLength` batches of the other one
    /// when a probe is due (`probeDue`). `prior` is the model's expectation; a known
    /// `limit` may replace it (DeliveryLimit.prior).
    mutating func next(prior model: Arm, limit: DeliveryLimit? = nil) -> (arm: Arm, probing: Bool) {
        if let p = probe {
            probe = p.left > 1 ? (p.arm, p.left - 1) : nil
            if probe == nil { verdictIn = DeliveryArms.probeLength }
            return (p.arm, true)
        }
        // Raw while the link waits for it, compressed while the link stays full: the
        // better way by construction (each wire byte carries the same input or more), so
        // neither a stale rate of the other arm nor a probe can improve on it.
        if let limit, let sending, limit.settles(sending) { return (sending, false) }
        let prior = limit?.prior(sending: sending) ?? model
        let leader = self.leader(prior: prior)
        sinceProbe += 1
        takeVerdict(Verdict(leader: leader, prior: prior, limit: limit))
        guard probeDue(leader: leader, prior: prior, limit: limit) else { return (leader, false) }
        (sinceProbe, probe) = (0, (leader == .raw ? .coded : .raw, DeliveryArms.probeLength - 1))
        return (probe!.arm, true)
    }

    /// A finished probe's verdict, once its writes had time to be counted; a probe that
    /// kept the leader doubles the interval to the next one.
    private mutating func takeVerdict(_ now: Verdict) {
        guard let n = verdictIn else { return }
        guard n <= 1 else { verdictIn = n - 1; return }
        interval = verdict?.leader == now.leader ? min(interval * 2, DeliveryArms.maxProbeEvery) : DeliveryArms.probeEvery
        (verdict, verdictIn) = (now, nil)
    }

    private func probeDue(leader: Arm, prior: Arm, limit: DeliveryLimit?) -> Bool {
        let other: Arm = leader == .raw ? .coded : .raw
        if other == .raw && rawCannotWin { return false }
        if rate(other) == nil { return sinceProbe > DeliveryArms.firstProbeAfter }
        guard verdictIn == nil, let verdict else { return sinceProbe > interval }
        let changed = verdict.prior != prior || verdict.limit != limit
        return sinceProbe > (changed ? DeliveryArms.changedProbeAfter : interval)
    }
}
