import MigrationTLS

/// What set the pace of delivery over the last readings of the connection's TCP_INFO.
enum DeliveryLimit: Sendable, Equatable, CustomStringConvertible {
    /// The socket ran dry part of the time: the link waited for us (our CPU, our reads).
    case sender
    /// The peer's receive window stalled the sender: the receiver did not keep up.
    case receiver
    /// Bytes waited in the socket with the window open: the network sets the pace.
    case network

    var description: String {
        switch self {
        case .sender: "TCP: sender-bound"
        case .receiver: "TCP: receiver-bound"
        case .network: "TCP: network-bound"
        }
    }

    /// The arm this limit expects to deliver more, before both are measured: on a full
    /// link fewer bytes carry more input; a link that waits for raw bytes gains nothing
    /// from compressing them. A receiver that does not keep up tells neither: nil.
    func prior(sending: DeliveryArms.Arm?) -> DeliveryArms.Arm? {
        switch self {
        case .network: .coded
        case .sender: sending == .raw ? .raw : nil
        case .receiver: nil
        }
    }

    /// Sending `arm` under this limit is the better way without measuring the other:
    /// raw while the link waits for us (compressing only adds CPU), compressed while the
    /// link stays full (the codec keeps up, and fewer bytes carry more input).
    func settles(_ arm: DeliveryArms.Arm) -> Bool {
        (self == .sender && arm == .raw) || (self == .network && arm == .coded)
    }
}

/// TCP_INFO readings of the migration's connection → its delivery limit, from the
/// shares of wall time the kernel counted busy (data queued or in flight) and stalled
/// by the peer's window, over a decayed window of readings. Pure: readings and their
/// instants come in as values.
struct DeliveryLimitMeter: Sendable {
    /// From this share of the time stalled by the peer's window, the receiver is the limit.
    static let receiverShare = 0.4
    /// Below this share of the time busy, the socket ran dry: the sender is the limit.
    static let busyShare = 0.85
    /// Weight of the past at each reading (readings come every `AdaptiveEncoding.hostSampleInterval` or more).
    static let decay = 0.8
    /// Readings in a row that agree before a limit counts (a switch of arm or a burst must not flip it).
    static let stableReadings = 4
    /// The limit is read once the connection carried this much (what it carried counts
    /// from the start): before, its time went to the handshake, the HELLOs and slow
    /// start, which read sender-bound, and at 1 Gbit/s that sent the first 32 MiB raw
    /// (issue 14). On a fast link it takes a few milliseconds.
    static let warmUpBytes: UInt64 = 16 << 20

    private var last: (info: TCPInfo, at: ContinuousClock.Instant)?
    /// Busy (`bytes`) and window-stalled (`output`) seconds over wall seconds.
    private var window = AdaptiveEncoding.DecayedRate()
    /// Acknowledged bytes over wall seconds: what the network carried our bytes at.
    /// Raw input is wire bytes, so over any stretch raw batches deliver no more input
    /// than this. (The kernel's `tcpi_delivery_rate` samples were tried first: behind
    /// `tbf`'s burst they read up to 170 MB/s on a 1 Gbit/s link.)
    private var carried = AdaptiveEncoding.DecayedRate()
    /// The same over the readings whose own interval was busy throughout (the socket
    /// never ran dry): what the network carries when it sets the pace. `carried` falls
    /// as soon as the socket runs dry, before the readings agree on `.sender`, and that
    /// fallen rate taken as the network's read a 1 Gbit/s link as 89 MB/s for the
    /// sender-bound stretch after it, where `auto` then kept level 3 that could not
    /// keep the link full (issue 14).
    private var carriedWhileBusy = AdaptiveEncoding.DecayedRate()
    private var latest: DeliveryLimit?
    private var agreeing = 0
    /// The last limit `stableReadings` readings agreed on.
    private(set) var limit: DeliveryLimit?
    /// What the network carried when it last set the pace (limit `.network`).
    private(set) var networkBoundRate: Double?
    /// When it last did.
    private(set) var networkBoundAt: ContinuousClock.Instant?

    /// `networkBoundRate` if the network set the pace within `age` of `now`: a link that
    /// got faster while we set the pace must not stay capped by an old reading.
    func networkBoundRate(within age: Duration, of now: ContinuousClock.Instant) -> Double? {
        guard let at = networkBoundAt, now - at <= age else { return nil }
        return networkBoundRate
    }

    /// What the network carried, acknowledged bytes per second; nil before two readings.
    var carriedBytesPerSecond: Double? { carried.perSecond }

    /// A reading taken `at`; one whose counters went backwards (a new connection after a
    /// resume) starts the window again.
    mutating func sample(_ info: TCPInfo, at now: ContinuousClock.Instant) {
        defer { last = (info, now) }
        guard let last, now > last.at else { return }
        guard info.busyMicroseconds >= last.info.busyMicroseconds,
              info.receiveWindowLimitedMicroseconds >= last.info.receiveWindowLimitedMicroseconds,
              info.bytesAcked >= last.info.bytesAcked else {
            // A new connection on the same path: what the path carried still holds.
            (self, networkBoundRate, networkBoundAt) = (DeliveryLimitMeter(), networkBoundRate, networkBoundAt)
            return
        }
        let seconds = (now - last.at).seconds
        carried.add(bytes: Double(info.bytesAcked - last.info.bytesAcked), seconds: seconds, decay: DeliveryLimitMeter.decay)
        guard info.bytesAcked >= DeliveryLimitMeter.warmUpBytes else { return }
        let busy = Double(info.busyMicroseconds - last.info.busyMicroseconds) / 1e6
        let stalled = Double(info.receiveWindowLimitedMicroseconds - last.info.receiveWindowLimitedMicroseconds) / 1e6
        window.add(bytes: busy, seconds: seconds, output: stalled, decay: DeliveryLimitMeter.decay)
        if busy >= DeliveryLimitMeter.busyShare * seconds && stalled < DeliveryLimitMeter.receiverShare * seconds {
            carriedWhileBusy.add(bytes: Double(info.bytesAcked - last.info.bytesAcked), seconds: seconds, decay: DeliveryLimitMeter.decay)
        }
        let limit = classify()
        agreeing = limit == latest ? agreeing + 1 : 1
        latest = limit
        if agreeing >= DeliveryLimitMeter.stableReadings { self.limit = limit }
        if self.limit == .network, let rate = carriedWhileBusy.perSecond ?? carried.perSecond { (networkBoundRate, networkBoundAt) = (rate, now) }
    }

    private func classify() -> DeliveryLimit {
        let stalled = window.output / window.seconds, busy = window.bytes / window.seconds
        if stalled >= DeliveryLimitMeter.receiverShare { return .receiver }
        return busy >= DeliveryLimitMeter.busyShare ? .network : .sender
    }
}

/// The codec level while compressing: one step up the ladder while the link stays
/// network-bound (the workers keep it full, so a better ratio carries more input per
/// wire byte), one step back when it turns sender-bound (the level costs more CPU than
/// the cores have), and that level not tried again for a while. The model's level is
/// the floor; a level the workers' cores could not keep the link full with by far is
/// no step (`affordable`). Pure: the limit and the ladder's bounds come in as values.
struct LevelClimb: Sendable {
    /// Compressed batches after a step before the limit counts again: the send queue
    /// and the socket still hold bytes of the level before, and the limit needs
    /// `DeliveryLimitMeter.stableReadings` fresh readings.
    static let settleBatches = 48
    /// Compressed batches a level that ran the socket dry is not tried again: the
    /// first time, then twice as long each time the same level runs it dry again, up
    /// to `blockedFor`. One bar of 2048 batches (8 s at 1 Gbit/s, more than a 1 GiB
    /// guest's whole pass) after a moment of CPU taken by other work kept level 3 out
    /// for the rest of the migration; a first bar of 128 let a level the cores cannot
    /// sustain (level 6 on 2 cores) run the socket dry four times a pass (issue 14).
    static let blockedFirst = 512
    static let blockedFor = 2048

    /// After a step back, a further step back waits this many times `settleBatches`
    /// unless the link was read network-bound in between: the socket the level above
    /// ran dry takes that long to fill again, and reading its emptiness as this level's
    /// fault took `auto` from level 6 down to 1 for 230 batches at 1 Gbit/s (issue 14).
    static let settleAfterStepBack = 4

    /// The ladder index climbed to; nil: the model's.
    private(set) var level: Int?
    private var sinceStep = 0
    /// The last step was back, and the link has not been network-bound since.
    private var refilling = false
    /// A level that turned sender-bound, and for how many more batches it is barred.
    private var ceiling: (level: Int, batchesLeft: Int)?
    /// How often each level turned sender-bound: its next bar is that much longer.
    private var strikes: [Int: Int] = [:]

    /// The ladder index for the next compressed batch. `model`: the model's index;
    /// `affordable`: the highest index worth a try; `limit`: the delivery limit read
    /// while compressed batches went out (nil otherwise).
    mutating func next(model: Int, affordable: Int, limit: DeliveryLimit?) -> Int {
        sinceStep += 1
        if let c = ceiling { ceiling = c.batchesLeft > 1 ? (c.level, c.batchesLeft - 1) : nil }
        let current = max(model, level ?? model)
        if limit == .network { refilling = false }
        guard sinceStep > LevelClimb.settleBatches else { return current }
        switch limit {
        case .network? where current + 1 <= affordable && current + 1 < (ceiling?.level ?? .max):
            (level, sinceStep) = (current + 1, 0)
            return current + 1
        case .network? where current > (level ?? -1):
            // The model chose above the climb while the link stays full: hold that level
            // rather than drop back whenever its estimates swing (1 and 3 alternated
            // batch by batch at 1 Gbit/s); only a dry socket steps back from it.
            (level, sinceStep) = (current, 0)
            return current
        case .sender? where current > model && (!refilling || sinceStep > LevelClimb.settleAfterStepBack * LevelClimb.settleBatches):
            refilling = true
            strikes[current, default: 0] += 1
            let bar = min(LevelClimb.blockedFor, LevelClimb.blockedFirst << min(strikes[current]! - 1, 8))
            (ceiling, level, sinceStep) = ((current, bar), current - 1, 0)
            return current - 1
        default:
            return current
        }
    }
}
