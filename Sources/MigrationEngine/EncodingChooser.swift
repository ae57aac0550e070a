import MigrationWire

/// What a codec level does on this data on this machine now: input bytes per
/// second of one compressing thread, and output bytes per input byte.
struct CodecRate: Sendable, Equatable {
    var bytesPerSecond: Double
    var ratio: Double
    /// How much recent input the figures rest on (decayed bytes): what this level's
    /// figures weigh when the levels are compared through one scale.
    var weight = 1.0
}

/// The measurements `auto` decides from (PROTOCOL.md §9 leaves the choice to the sender).
struct EncodingRates: Sendable, Equatable {
    /// Wire bytes per second the TLS writer moves while it writes; nil before the first write.
    var linkBytesPerSecond: Double?
    /// Measured codec levels (the others are estimated from these and the ladder's priors).
    var codecs: [PayloadCodec: CodecRate] = [:]
    /// Cores the workers may compress on at once.
    var cores = CoreBudget(cores: 1, measured: false)
}

/// The cores compression may use, and where the figure comes from.
struct CoreBudget: Sendable, Equatable, CustomStringConvertible {
    var cores: Double
    /// From the host's idle CPU (IdleCoreMeter): may be below one, down to none.
    /// Otherwise the workers' cores less the writer's share, at least one.
    var measured: Bool
    /// Measured, and the host had almost no idle CPU (IdleCoreMeter.isSaturated).
    var saturated = false

    /// What the chooser multiplies a level's one-thread rate by.
    var threads: Double { measured ? max(cores, 0) : max(cores, 1) }
    var description: String {
        (measured ? "idle cores " : "cores ") + String(format: "%.1f", threads)
    }
}

/// Why `auto` sends a batch the way it does; shown in progress events.
indirect enum EncodingReason: Sendable, Equatable, CustomStringConvertible {
    /// Nothing written yet: the cheapest level, until the link has a rate.
    case linkNotMeasured
    /// Raw bytes reach the peer sooner than any level could compress them on these cores.
    case linkFasterThanCodecs(link: Double, bestCodec: Double, cores: CoreBudget)
    /// The link is the bottleneck: this level keeps it full (or comes closest) with the best ratio.
    case linkBound(link: Double, codec: Double, ratio: Double, cores: CoreBudget)
    /// A batch among raw ones compressed anyway, so the codec's measured rate stays current.
    case remeasuring
    /// With host readings: the way that delivered more input when each was measured
    /// (DeliveryArms), or the other one, measured again in turn.
    case deliveredMore(DeliveryArms.Arm, cores: CoreBudget, raw: Double?, coded: Double?, probing: Bool)
    /// The same, with what the connection's TCP_INFO says limits delivery (DeliveryLimit).
    case transport(DeliveryLimit, EncodingReason)
    /// A level above or below the model's, stepped to by what TCP_INFO said while compressing (LevelClimb).
    case climbed(PayloadCodec, EncodingReason)

    /// Batches sent the other way to measure it (DeliveryArms' probes).
    var isProbe: Bool {
        switch self {
        case .deliveredMore(_, _, _, _, let probing): probing
        case .transport(_, let reason), .climbed(_, let reason): reason.isProbe
        default: false
        }
    }

    var description: String {
        func mb(_ v: Double) -> String { "\(Int((v / 1e6).rounded())) MB/s" }
        switch self {
        case .linkNotMeasured: return "link not measured yet: cheapest level"
        case .linkFasterThanCodecs(let link, let best, let cores):
            return "\(cores): raw (link moves \(mb(link)), faster than the best level delivers: \(mb(best)) of input)"
        case .linkBound(let link, let codec, let ratio, let cores):
            return "\(cores): link moves \(mb(link)); this level delivers \(mb(codec)) of input at \(Int((ratio * 100).rounded())) % of the size"
        case .remeasuring: return "one batch in \(AdaptiveEncoding.remeasureEvery) of raw ones: measuring the cheapest level again"
        case .deliveredMore(let arm, let cores, let raw, let coded, let probing):
            let rates = "raw delivered \(raw.map(mb) ?? "?"), compressed \(coded.map(mb) ?? "?") of input"
            let way = arm == .raw ? "raw" : "compressed"
            return probing ? "\(cores): measuring \(way) again (\(rates))" : "\(cores): \(way) (\(rates))"
        case .transport(let limit, let reason): return "\(limit); \(reason)"
        case .climbed(let codec, let reason): return "\(codec) as the link stayed full while compressing; \(reason)"
        }
    }
}

struct EncodingDecision: Sendable, Equatable {
    var choice: CodecChoice
    var reason: EncodingReason
}

/// `auto`'s choice per batch, from the link's drain rate, the codecs' rates and the
/// cores compression may use: the encoding that moves input fastest, min(cores × codec
/// rate, link ÷ ratio) (raw: the link), and among those within `tolerance` of the
/// fastest the smallest on the wire. A fast link or a host without idle cores gets raw
/// bytes; a slow link the best ratio the idle cores can afford.
/// Pure: every input is in `EncodingRates`, so tests decide on synthetic rates.
struct EncodingChooser: Sendable {
    /// One candidate level with what it does on the benchmark corpus's data pages
    /// (docs/PERFORMANCE.md): the prior until it is measured here.
    struct Step: Sendable, Equatable {
        var codec: PayloadCodec
        var prior: CodecRate
    }

    /// Cheapest first.
    let ladder: [Step]
    /// Candidates this close to the fastest count as equally fast (then the ratio decides).
    var tolerance = 0.05

    /// zstd when the destination accepts it, else raw DEFLATE (libdeflate).
    init(zstdAccepted: Bool) {
        ladder = zstdAccepted ? EncodingChooser.zstdLadder : EncodingChooser.deflateLadder
    }

    init(ladder: [Step]) { self.ladder = ladder }

    // Priors: one thread on the benchmark corpus's non-zero pages in segments of up to
    // 1 MiB (random pages included: zstd stores them raw by itself), measured on the
    // 2-core reference machine (docs/PERFORMANCE.md). Only the levels' speeds and
    // ratios relative to each other matter: what is measured scales them all. zstd's
    // fast levels below -1 compress worse for little speed, so the ladder starts at -1.
    // It ends at 3: level 6 saved 1 % of the wire bytes at 1 Gbit/s once page copies took
    // the repeated pages, and a zstd lane switched between levels 3 and 6 held ~45 MiB more
    // than either level alone (the source's RssAnon reached 130-144 MiB against a bound of
    // 128; fixed zstd:3 and zstd:6 stay at 87-88 MiB; docs/PERFORMANCE.md).
    static let zstdLadder: [Step] = [
        Step(codec: .zstd(level: -1), prior: CodecRate(bytesPerSecond: 930e6, ratio: 0.449)),
        Step(codec: .zstd(level: 1), prior: CodecRate(bytesPerSecond: 680e6, ratio: 0.438)),
        Step(codec: .zstd(level: 3), prior: CodecRate(bytesPerSecond: 377e6, ratio: 0.417)),
    ]
    static let deflateLadder: [Step] = [
        Step(codec: .deflate(level: 1), prior: CodecRate(bytesPerSecond: 220e6, ratio: 0.364)),
        Step(codec: .deflate(level: 6), prior: CodecRate(bytesPerSecond: 98e6, ratio: 0.341)),
    ]

    func decide(_ rates: EncodingRates) -> EncodingDecision {
        guard let link = rates.linkBytesPerSecond, link > 0 else {
            return EncodingDecision(choice: .codec(ladder[0].codec), reason: .linkNotMeasured)
        }
        let threads = rates.cores.threads
        // Input bytes per second each way moves; a level whose output would be sent raw
        // anyway (≥ 95 %, PayloadCompressor's rule) is no candidate.
        let codecs = estimates(rates).filter { $0.rate.ratio < 0.95 }.map { e in
            (choice: CodecChoice.codec(e.codec), input: min(threads * e.rate.bytesPerSecond, link / e.rate.ratio), ratio: e.rate.ratio)
        }
        let candidates = [(choice: CodecChoice.raw, input: link, ratio: 1.0)] + codecs
        let fastest = candidates.map(\.input).max()!
        // Among the (nearly) fastest, the smallest on the wire; raw first, so it wins ties.
        let best = candidates.filter { $0.input >= fastest * (1 - tolerance) }.min { $0.ratio < $1.ratio }!
        guard case .codec = best.choice else {
            return EncodingDecision(choice: .raw, reason: .linkFasterThanCodecs(link: link, bestCodec: codecs.map(\.input).max() ?? 0, cores: rates.cores))
        }
        return EncodingDecision(choice: best.choice, reason: .linkBound(link: link, codec: best.input, ratio: best.ratio, cores: rates.cores))
    }

    /// Compressing cores may fall this short of keeping the link full at a level that
    /// is still worth a try (LevelClimb): the codec rates are measured on a loaded host,
    /// and the link's limit says the rest.
    static let affordableShortfall = 0.75

    /// The ladder's highest index whose estimated rate on `threads` cores keeps the link
    /// full, within `affordableShortfall`; 0 without a link rate.
    func highestAffordable(_ rates: EncodingRates, threads: Double) -> Int {
        guard let link = rates.linkBytesPerSecond, link > 0 else { return 0 }
        let levels = estimates(rates)
        return levels.indices.last { threads * levels[$0].rate.bytesPerSecond >= EncodingChooser.affordableShortfall * link / levels[$0].rate.ratio } ?? 0
    }

    /// Each level's rate: its prior scaled the way the measured levels differ from
    /// theirs (this machine's speed, this data's compressibility), each measured level
    /// weighing by its recent input. Levels are compared through that one scale, not
    /// each through its own figures: a level tried in a few batches at the start of a
    /// session or on device state (another mix of data) kept figures that no longer
    /// held, and ratios measured on different data put the levels out of their order,
    /// so a better level looked worse and was never used again (issue 14).
    func estimates(_ rates: EncodingRates) -> [(codec: PayloadCodec, rate: CodecRate)] {
        var speedScale = 0.0, ratioScale = 0.0, weight = 0.0
        for step in ladder {
            guard let m = rates.codecs[step.codec], m.weight > 0 else { continue }
            speedScale += m.weight * m.bytesPerSecond / step.prior.bytesPerSecond
            ratioScale += m.weight * m.ratio / step.prior.ratio
            weight += m.weight
        }
        if weight == 0 { (speedScale, ratioScale, weight) = (1, 1, 1) }
        return ladder.map { step in
            (step.codec, CodecRate(bytesPerSecond: step.prior.bytesPerSecond * speedScale / weight,
                                   ratio: min(1, step.prior.ratio * ratioScale / weight)))
        }
    }
}
