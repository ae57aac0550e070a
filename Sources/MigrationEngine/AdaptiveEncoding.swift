import Foundation
import MigrationTLS
import MigrationWire
import SyncPrimitives

/// `auto`'s running measurements, shared by the compression workers (codec rates)
/// and the pipeline's writer (the link's drain rate), and the decision they lead to.
/// Rates are decayed sums, so the last few dozen batches count: they follow a link
/// or a machine that changes speed while the migration runs.
final class AdaptiveEncoding: Sendable {
    /// Weight of the past at each new codec sample (about the last 10 batches count).
    static let decay = 0.9
    /// The link's, over about the last 30 writes (tens of MiB): a write that only fills
    /// the socket's send buffer (up to a few MiB) returns at once, and must not make
    /// a slow link look fast for long.
    static let linkDecay = 0.97
    /// Without host readings, every this many raw batches one runs the cheapest level
    /// instead: a level's rate is only measured while it is used, and one measured on
    /// a busy moment must not keep `auto` on raw once the cores are free again. (With
    /// readings, DeliveryArms' probes do this.)
    static let remeasureEvery = 16

    /// Bytes and seconds, decayed together: their quotient is the recent rate.
    struct DecayedRate: Sendable, Equatable {
        var bytes = 0.0
        var seconds = 0.0
        var output = 0.0

        mutating func add(bytes b: Double, seconds s: Double, output o: Double = 0, decay: Double = AdaptiveEncoding.decay) {
            bytes = bytes * decay + b
            seconds = seconds * decay + s
            output = output * decay + o
        }
        var perSecond: Double? { seconds > 0 && bytes > 0 ? bytes / seconds : nil }
        /// Less weight, the same rate and ratio.
        mutating func fade(_ decay: Double = AdaptiveEncoding.decay) { add(bytes: 0, seconds: 0, decay: decay) }
    }

    private struct State {
        var link = DecayedRate()
        /// The writer's CPU seconds (`bytes`) over the wall time from one write's start
        /// to the next (`seconds`): the share of a core TLS takes.
        var writerCPU = DecayedRate()
        var lastWriteStart: ContinuousClock.Instant?
        var codecs: [PayloadCodec: DecayedRate] = [:]
        /// The host's idle cores and our codecs' CPU (empty without /proc/stat).
        var host = IdleCoreMeter()
        /// What raw and compressed batches delivered: decides on a saturated host.
        var arms = DeliveryArms()
        /// The level compressed batches go at, stepped by the delivery limit.
        var climb = LevelClimb()
        /// What limits delivery, from the connection's TCP_INFO (nil limit without readings).
        var transport = DeliveryLimitMeter()
        var last: EncodingDecision?
        /// When the host and the connection were last read.
        var lastSample: ContinuousClock.Instant?
        var lastTransportSample: ContinuousClock.Instant?
        var rawInARow = 0
        /// Batches per choice ("raw", "zstd:1"): how the choices split over the session.
        var batches: [String: Int] = [:]
    }

    /// How long what the network carried while it set the pace caps a sender-bound link.
    static let networkBoundRateAge = Duration.seconds(2)

    /// Host CPU readings at most this often (the counters tick at 100 Hz).
    static let hostSampleInterval = Duration.milliseconds(20)
    /// TCP_INFO readings this often until they agreed on a delivery limit (then as the
    /// host's): until then every batch goes at the cheapest level, and at 10 Gbit/s the
    /// four agreeing readings 20 ms apart held 137 batches there (issue 14).
    static let transportWarmUpInterval = Duration.milliseconds(5)

    let chooser: EncodingChooser
    /// Cores the workers may use (min of workers and cores): the most compression gets.
    let cores: Int
    /// Reads the host's CPU counters (HostCPUTimes.read); nil: the workers model only.
    private let hostCPU: (@Sendable () -> HostCPUTimes?)?
    /// Reads the connection's TCP_INFO (the current stream's, after a resume too); nil: none.
    private let transport: (@Sendable () -> TCPInfo?)?
    private let state = LockedValue(State())

    init(chooser: EncodingChooser, cores: Int, hostCPU: (@Sendable () -> HostCPUTimes?)? = nil,
         transport: (@Sendable () -> TCPInfo?)? = nil) {
        self.chooser = chooser
        self.cores = cores
        self.hostCPU = hostCPU
        self.transport = transport
    }

    /// The choice for the next batch.
    func decide() -> EncodingDecision {
        state.withLock { s in
            let rates = EncodingRates(linkBytesPerSecond: linkRate(s),
                                      codecs: s.codecs.compactMapValues { r in
                                          r.perSecond.map { CodecRate(bytesPerSecond: $0, ratio: r.output / r.bytes, weight: r.bytes) } },
                                      cores: compressingCores(s))
            var decision = chooser.decide(rates)
            if rates.cores.measured { return record(climbed(verified(decision, &s, cores: rates.cores), &s, rates: rates), in: &s) }
            if decision.choice == .raw {
                s.rawInARow += 1
                if s.rawInARow % AdaptiveEncoding.remeasureEvery == 0 {
                    decision = EncodingDecision(choice: .codec(chooser.ladder[0].codec), reason: .remeasuring)
                }
            } else {
                s.rawInARow = 0
            }
            return record(decision, in: &s)
        }
    }

    private func record(_ decision: EncodingDecision, in s: inout State) -> EncodingDecision {
        s.last = decision
        s.batches[decision.choice.description, default: 0] += 1
        return decision
    }

    /// The model's `decision` as the prior, what raw and compressed batches delivered
    /// as the verdict once both are measured (DeliveryArms): whether compressing takes
    /// CPU a receiver on this host needed, or only what a slow link left idle, shows
    /// there. The connection's delivery limit (TCP_INFO) may replace the prior and makes
    /// probes unneeded where it decides by itself. A compressed batch uses the model's
    /// level (the cheapest if it chose raw).
    private func verified(_ decision: EncodingDecision, _ s: inout State, cores: CoreBudget) -> EncodingDecision {
        let model: DeliveryArms.Arm = decision.choice == .raw ? .raw : .coded
        let limit = s.transport.limit
        // What the network carried bounds raw, but while we set the pace it is our own
        // rate (at 10 Gbit/s, the compressed batches' wire rate, which made compressing
        // look twice as good as raw): then what it carried when it set the pace, if ever.
        s.arms.rawCeiling = limit == .sender ? s.transport.networkBoundRate : s.transport.carriedBytesPerSecond
        let (arm, probing) = s.arms.next(prior: model, limit: limit)
        if arm == model && !probing && !s.arms.measured {
            return limit.map { EncodingDecision(choice: decision.choice, reason: .transport($0, decision.reason)) } ?? decision
        }
        var reason = EncodingReason.deliveredMore(arm, cores: cores, raw: s.arms.rate(.raw), coded: s.arms.rate(.coded), probing: probing)
        if let limit { reason = .transport(limit, reason) }
        if arm == .raw { return EncodingDecision(choice: .raw, reason: reason) }
        return EncodingDecision(choice: model == .coded ? decision.choice : .codec(chooser.ladder[0].codec), reason: reason)
    }

    /// A compressed batch's level as LevelClimb steps it from the chosen one, with the
    /// limit read while compressed batches went out. A probe's batches keep their level.
    private func climbed(_ decision: EncodingDecision, _ s: inout State, rates: EncodingRates) -> EncodingDecision {
        guard case .codec(let codec) = decision.choice, !decision.reason.isProbe,
              let model = chooser.ladder.firstIndex(where: { $0.codec == codec }) else { return decision }
        let limit = s.arms.sending == .coded ? s.transport.limit : nil
        let level = s.climb.next(model: model, affordable: chooser.highestAffordable(rates, threads: climbingThreads(rates.cores)), limit: limit)
        guard level != model else { return decision }
        let stepped = chooser.ladder[level].codec
        return EncodingDecision(choice: .codec(stepped), reason: .climbed(stepped, decision.reason))
    }

    /// The cores a level may count on to be worth a try: the measured compressing cores
    /// with the reserve given back (a try may use it), at most the workers'. Counting every
    /// worker's core tried level 6 twice a migration at 1 Gbit/s on 2 cores shared with
    /// the receiver, and each try ran the socket dry before it stepped back (issue 14).
    /// A saturated host says nothing about it (our own workers may be what fills it):
    /// then every worker's core, and the try decides.
    private func climbingThreads(_ budget: CoreBudget) -> Double {
        guard budget.measured, !budget.saturated else { return Double(cores) }
        return min(Double(cores), budget.cores + IdleCoreMeter.reserve)
    }

    /// The cores compression may use: measured from the host's idle CPU when there are
    /// readings (IdleCoreMeter), at most the workers' cores. Without them, the workers'
    /// cores less the writer's share (it encrypts on one of them for the share of the
    /// time it is busy), never below one.
    private func compressingCores(_ s: State) -> CoreBudget {
        if let idle = s.host.compressingCores {
            return CoreBudget(cores: min(Double(cores), idle), measured: true, saturated: s.host.isSaturated)
        }
        let writerShare = s.writerCPU.perSecond.map { min(max($0, 0), 1) } ?? 0
        return CoreBudget(cores: max(1, Double(cores) - writerShare), measured: false)
    }

    /// A worker compressed `input` bytes to `output` in `time` with `codec`, using `cpu`
    /// of its thread's CPU time.
    func recordCompression(_ codec: PayloadCodec, input: Int, output: Int, time: Duration, cpu: Duration = .zero) {
        guard input > 0 else { return }
        state.withLock { s in
            // The other levels' figures fade by the same step, so what they weigh
            // against this one is how recently they ran (EncodingChooser.estimates).
            for other in s.codecs.keys where other != codec { s.codecs[other]?.fade() }
            s.codecs[codec, default: DecayedRate()].add(bytes: Double(input), seconds: time.seconds, output: Double(output))
            s.host.addCodecCPU(seconds: cpu.seconds)
        }
    }

    /// A reading of the host's CPU counters, taken `at`.
    func recordHostCPU(_ times: HostCPUTimes, at: ContinuousClock.Instant) {
        state.withLock { $0.host.sample(times, at: at) }
    }

    /// A reading of the connection's TCP_INFO, taken `at`.
    func recordTransport(_ info: TCPInfo, at: ContinuousClock.Instant) {
        state.withLock { $0.transport.sample(info, at: at) }
    }

    /// The link's rate: what the writer drains, but unless TCP_INFO says the sender
    /// sets the pace, no more than the network carried (while we set it, that is only
    /// our own rate, so then no more than what it carried when it last set the pace). The socket's send buffer takes the first megabytes at memory
    /// speed, so the writer's drain rate alone read a 1 Gbit/s link as 0.8–1 GB/s and
    /// the first ~50 MiB went raw (issue 14); with TCP_INFO at hand the link counts
    /// as not measured until it said what the network carried and what limits delivery.
    private func linkRate(_ s: State) -> Double? {
        guard let drain = s.link.perSecond else { return nil }
        // Not before TCP_INFO said what limits delivery (past the connection's warm-up): in
        // slow start what the network carried reads low, and at 10 Gbit/s levels 1 and 3
        // were chosen for the first 140 MiB (issue 14); until then, the cheapest level.
        guard let carried = s.transport.carriedBytesPerSecond, s.transport.limit != nil else { return transport == nil ? drain : nil }
        guard s.transport.limit == .sender else { return min(drain, carried) }
        // Sender-bound: no faster than the network carried when it last set the pace, if
        // that was lately. A moment of CPU taken by other work let the writer drain into
        // the socket buffer at 1 GB/s on a 1 Gbit/s link, and 16 batches went raw (issue 14).
        let recent = s.transport.networkBoundRate(within: AdaptiveEncoding.networkBoundRateAge, of: .now)
        return min(drain, recent ?? drain)
    }

    /// The writer moved `bytes` to the TLS stream from `started` to `ended` (its wait
    /// for room included), using `cpu` of its thread's CPU time; they carried `input`
    /// payload bytes of `kind`, compressed or not (`coded`).
    func recordDrain(bytes: UInt64, started: ContinuousClock.Instant, ended: ContinuousClock.Instant, cpu: Duration,
                     input: UInt64 = 0, coded: Bool = false, kind: DeliveryArms.Kind = .pages) {
        guard bytes > 0 else { return }
        state.withLock { s in
            s.arms.recordWrite(coded ? .coded : .raw, kind: kind, input: input, at: ended)
            s.link.add(bytes: Double(bytes), seconds: (ended - started).seconds, decay: AdaptiveEncoding.linkDecay)
            if let last = s.lastWriteStart {
                s.writerCPU.add(bytes: cpu.seconds, seconds: (started - last).seconds, decay: AdaptiveEncoding.linkDecay)
            }
            s.lastWriteStart = started
        }
        sampleHost(now: ended)
    }

    /// Reads the host's counters when the last reading is `hostSampleInterval` old, and
    /// the connection's TCP_INFO as often, or every `transportWarmUpInterval` while no
    /// delivery limit is known (on the writer's thread, outside the lock).
    private func sampleHost(now: ContinuousClock.Instant) {
        let (host, tcp) = state.withLock { s -> (Bool, Bool) in
            let host = s.lastSample.map { now - $0 >= AdaptiveEncoding.hostSampleInterval } ?? true
            let interval = s.transport.limit == nil ? AdaptiveEncoding.transportWarmUpInterval : AdaptiveEncoding.hostSampleInterval
            let tcp = s.lastTransportSample.map { now - $0 >= interval } ?? true
            if host { s.lastSample = now }
            if tcp { s.lastTransportSample = now }
            return (host, tcp)
        }
        if host, let times = hostCPU?() { recordHostCPU(times, at: .now) }
        if tcp, let info = transport?() { recordTransport(info, at: .now) }
    }

    /// For progress events: the latest decision, the rates behind it and the split so far.
    var report: EncodingReport? {
        state.withLock { s in
            s.last.map {
                EncodingReport(choice: $0.choice.description, reason: $0.reason.description,
                               linkBytesPerSecond: linkRate(s), batches: s.batches)
            }
        }
    }
}

/// CPU time the calling thread has used (CLOCK_THREAD_CPUTIME_ID): how much of a
/// core the writer's TLS encryption takes.
func threadCPUTime() -> Duration {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return .seconds(ts.tv_sec) + .nanoseconds(ts.tv_nsec)
}

/// `auto`'s latest choice and why, as progress events carry it (docs/EVENTS.md).
public struct EncodingReport: Sendable, Codable, Equatable {
    /// "raw" or a codec level ("zstd:1", "deflate:1").
    public var choice: String
    public var reason: String
    public var linkBytesPerSecond: Double?
    /// Batches sent so far per choice.
    public var batches: [String: Int]
}

/// How a source encodes payloads, settled by the HELLO exchange: the policy, whether
/// the destination accepts zstd, and under `auto` the shared measurements.
struct SendEncoding: Sendable {
    let policy: CompressionPolicy
    let zstdAccepted: Bool
    /// `auto` only.
    let adaptive: AdaptiveEncoding?
    /// Version 4: the session's zstd lanes, over all its streams, both HELLOs settled on (§15.2); 0 = none.
    let lanes: Int

    init(policy: CompressionPolicy, destinationAccepts: [Encoding], workers: Int, lanes: Int = 0, transport: (@Sendable () -> TCPInfo?)? = nil) {
        self.policy = policy
        self.lanes = lanes
        zstdAccepted = destinationAccepts.contains(.zstd) && policy.encodings.contains(.zstd)
        adaptive = policy == .auto
            ? AdaptiveEncoding(chooser: EncodingChooser(zstdAccepted: zstdAccepted),
                               cores: max(1, min(workers, ProcessInfo.processInfo.activeProcessorCount)),
                               hostCPU: HostCPUTimes.read, transport: transport)
            : nil
    }

    /// One per worker thread.
    func makeCompressor() throws(MigrationFailure) -> PayloadCompressor {
        do throws(WireError) { return try PayloadCompressor(policy: policy, zstdAccepted: zstdAccepted) } catch { throw MigrationFailure(error) }
    }

    /// Lanes a source asks for at most: a lane's context holds a 16 MiB window and
    /// long-distance match tables (about 22 MiB each, measured), so the source's memory
    /// stays bounded whatever the streams.
    static let maxLanesPerSession = 4

    /// The lanes stream `stream` uses, when each stream has `workers` compressing threads:
    /// one per thread, the first streams first, all of them together within the session's.
    func lanes(stream: Int, workers: Int) -> Int {
        let each = min(lanes, max(workers, 0))
        return max(0, min(each, lanes - stream * each))
    }

    /// The zstd lane of stream `stream`'s worker `index` (one per thread, for the session),
    /// nil past the stream's lanes: that worker's zstd segments are frames of their own.
    func makeLane(index: Int, stream: Int, workers: Int) throws(MigrationFailure) -> ZstdLane? {
        guard index < lanes(stream: stream, workers: workers), let number = UInt8(exactly: index) else { return nil }
        do throws(WireError) { return ZstdLane(index: number, encoder: try ZstdLaneEncoder()) } catch { throw MigrationFailure(error) }
    }

    /// Runs `encode` with `auto`'s choice for this batch and feeds what the codec did back;
    /// `coded`: `auto` chose a codec level.
    func encodeBatch<T>(_ compressor: PayloadCompressor, _ encode: (CodecChoice?) throws(WireError) -> T) throws(MigrationFailure) -> (value: T, coded: Bool) {
        let choice = adaptive?.decide().choice
        let (before, cpu) = (compressor.counters, adaptive == nil ? .zero : threadCPUTime())
        let result: T
        do throws(WireError) { result = try encode(choice) } catch { throw MigrationFailure(error) }
        if let adaptive, case .codec(let codec) = choice {
            let after = compressor.counters
            adaptive.recordCompression(PayloadCompressor.resolve(codec, zstdAccepted: zstdAccepted),
                                       input: after.codecBytesIn - before.codecBytesIn, output: after.codecBytesOut - before.codecBytesOut,
                                       time: after.codecTime - before.codecTime, cpu: threadCPUTime() - cpu)
            return (result, true)
        }
        return (result, false)
    }
}


