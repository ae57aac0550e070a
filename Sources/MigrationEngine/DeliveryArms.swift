/// Input bytes per second the writer delivered while batches went raw and while they
/// were compressed: outcomes, not a model. On a host without idle cores the model
/// cannot tell a receiver on the same host that needs the CPU (compressing slows
/// everything: raw wins) from other work on it while a slow link waits (our workers
/// still get their share of the CPU, and compressing wins); measuring both tells.
/// Pure: writes and their instants come in as values.
struct DeliveryArms: Sendable {
    enum Arm: Sendable, Equatable { case raw, coded }

    /// About the last 10 counted writes of an arm.
    static let decay = 0.9
    /// The first writes of a run of one arm are not counted: the socket's buffer and
    /// the receiver still hold the other arm's bytes (tens of MiB on loopback).
    static let settle = 12
    /// Batches of the other arm in a probe: `settle` and some to count.
    static let probeLength = 32
    /// Batches of the leading arm between probes; the first probe comes sooner.
    static let probeEvery = 512
    static let firstProbeAfter = 32
    /// Compressing must deliver this much more than raw to lead: it costs CPU, and on
    /// loopback a probe's rate still gains a little from the raw bytes before it.
    static let margin = 0.15

    private var delivered: [Arm: AdaptiveEncoding.DecayedRate] = [:]
    private var last: (arm: Arm, at: ContinuousClock.Instant, run: Int)?
    private var sinceProbe = 0
    private var probe: (arm: Arm, left: Int)?

    /// The writer wrote a batch of `input` payload bytes of `arm`, finishing `at`.
    /// Control frames (no payload) do not count.
    mutating func recordWrite(_ arm: Arm, input: UInt64, at end: ContinuousClock.Instant) {
        guard input > 0 else { return }
        let run = last.map { $0.arm == arm ? $0.run + 1 : 1 } ?? 1
        if let last, run > DeliveryArms.settle, end > last.at {
            delivered[arm, default: .init()].add(bytes: Double(input), seconds: (end - last.at).seconds, decay: DeliveryArms.decay)
        }
        last = (arm, end, run)
    }

    /// Input bytes per second measured for `arm`, nil before it was.
    func rate(_ arm: Arm) -> Double? { delivered[arm]?.perSecond }

    /// Both arms were measured.
    var measured: Bool { rate(.raw) != nil && rate(.coded) != nil }

    /// Once both are measured, raw unless compressing delivered more by `margin`;
    /// before, `prior` (what the model expects).
    func leader(prior: Arm) -> Arm {
        guard let raw = rate(.raw), let coded = rate(.coded) else { return prior }
        return coded > raw * (1 + DeliveryArms.margin) ? .coded : .raw
    }

    /// The arm for the next batch: the leader, and every `probeEvery` batches (the
    /// first time after `firstProbeAfter`) `probeLength` of the other one, so both
    /// stay measured as the load changes.
    mutating func next(prior: Arm) -> (arm: Arm, probing: Bool) {
        if let p = probe {
            probe = p.left > 1 ? (p.arm, p.left - 1) : nil
            return (p.arm, true)
        }
        let leader = self.leader(prior: prior)
        let other: Arm = leader == .raw ? .coded : .raw
        sinceProbe += 1
        let due = rate(other) == nil ? DeliveryArms.firstProbeAfter : DeliveryArms.probeEvery
        guard sinceProbe > due else { return (leader, false) }
        (sinceProbe, probe) = (0, (other, DeliveryArms.probeLength - 1))
        return (other, true)
    }
}
