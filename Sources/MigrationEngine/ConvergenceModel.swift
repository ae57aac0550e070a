import Foundation

/// The knobs of the convergence model. Defaults are the documented ones
/// (docs/PERFORMANCE.md, "Convergence model").
public struct ConvergenceParameters: Sendable, Equatable {
    public var downtimeTargetMs: Double = 300
    /// K: iterations in a row without a meaningful shrink before `stalled` (`--max-stalled-iterations`).
    public var maxStalledIterations: Int = 3
    /// A shrink smaller than this fraction of the remaining set is noise, not progress.
    public var minimumShrinkFraction: Double = 0.10
    /// Iterations in a row with dirty rate ≥ transfer rate before `diverging`:
    /// one slow iteration (a hiccup on the link) is not a trend.
    public var divergingIterations: Int = 2
    /// Iterations whose dirtied/moved ratios (their median) make the projection's trend.
    public var trendWindow: Int = 3
    /// Switch-over cost that is not bytes: device state changes, DEVICE_END and
    /// COMPLETE, the destination's digest check, COMMIT→RESUMED. Measured on
    /// loopback with (almost) nothing left to send: 3–16 ms over 20 runs (median
    /// 11); 20 ms covers it. On a real network add 2 × RTT (COMPLETE→READY, COMMIT→RESUMED).
    public var switchoverOverheadMs: Double = 20
    /// Shorter iterations are measured as this long (the loop's rate floor).
    public var minimumIterationSeconds: Double = 0.05

    public init() {}

    /// For the command line: every rule in one place, with a typed error.
    public func validate() throws(ConvergenceParameterError) {
        guard downtimeTargetMs.isFinite, downtimeTargetMs > 0 else { throw .downtimeTargetMs(downtimeTargetMs) }
        guard maxStalledIterations >= 1 else { throw .maxStalledIterations(maxStalledIterations) }
        guard minimumShrinkFraction > 0, minimumShrinkFraction < 1 else { throw .minimumShrinkFraction(minimumShrinkFraction) }
        guard divergingIterations >= 1 else { throw .divergingIterations(divergingIterations) }
        guard trendWindow >= 1 else { throw .trendWindow(trendWindow) }
        guard switchoverOverheadMs.isFinite, switchoverOverheadMs >= 0 else { throw .switchoverOverheadMs(switchoverOverheadMs) }
        guard minimumIterationSeconds > 0 else { throw .minimumIterationSeconds(minimumIterationSeconds) }
    }
}

/// A parameter out of range; the case names the parameter, the value is what was given.
public enum ConvergenceParameterError: Error, Equatable, Sendable {
    case downtimeTargetMs(Double)
    case maxStalledIterations(Int)
    case minimumShrinkFraction(Double)
    case divergingIterations(Int)
    case trendWindow(Int)
    case switchoverOverheadMs(Double)
    case minimumIterationSeconds(Double)
    case throttlePercents(initial: Int, increment: Int, max: Int)
}

/// Pre-copy convergence, fed once per iteration. A value type with no clock and
/// no I/O: the loop measures, the model judges.
public struct ConvergenceModel: Sendable {
    public private(set) var parameters: ConvergenceParameters
    public private(set) var iterations = 0
    public private(set) var latest: ConvergenceFigures?

    private var previous: PreviousIteration?
    /// Every guest page, as the full pass reported them.
    private var guestPages: UInt64?
    private var stall: StallTracker
    private var trend: DirtyTrend
    private var divergingStreak = 0

    /// The operator changed the target mid-migration (the control socket's `set`);
    /// the history (stall count, trend) stays, only the bar moves.
    public mutating func setDowntimeTarget(ms: Double) { parameters.downtimeTargetMs = ms }

    public init(parameters: ConvergenceParameters = ConvergenceParameters()) {
        self.parameters = parameters
        stall = StallTracker(minimumShrinkFraction: parameters.minimumShrinkFraction)
        trend = DirtyTrend(window: parameters.trendWindow)
    }

    /// Takes one iteration's measurements; returns the figures and the verdict.
    @discardableResult
    public mutating func record(_ sample: IterationSample) -> ConvergenceFigures {
        iterations += 1
        let rates = IterationRates(sample, previous: previous, minimumSeconds: parameters.minimumIterationSeconds)
        previous = PreviousIteration(devicePendingBytes: sample.devicePendingBytes, seconds: rates.seconds,
                                     wireBytesPerSecond: rates.wireBytesPerSecond,
                                     compressionRatio: rates.rawBytesPerSecond / max(rates.wireBytesPerSecond, 1))
        if sample.isFullPass { guestPages = sample.dirtyPages }
        let saturated = !sample.isFullPass && guestPages.map { sample.dirtyPages >= $0 } == true
        let remaining = Double(sample.deviceRemainingBytes) + Double(sample.dirtyPageBytes)
        stall.observe(remaining)
        if let dirtied = rates.dirtiedBytes {
            trend.append(dirtied: dirtied, capacity: rates.rawCapacityBytes)
            divergingStreak = dirtied >= rates.rawCapacityBytes ? divergingStreak + 1 : 0
        }
        let estimateMs = DowntimeEstimate.milliseconds(
            remainingBytes: remaining, inFlightBytes: Double(sample.inFlightRawBytes),
            rawBytesPerSecond: rates.rawBytesPerSecond, overheadMs: parameters.switchoverOverheadMs)
        // A log that found every page dirty only bounds the dirty rate from below, and at
        // this pace the next round is the whole guest again: no projection can be made.
        let projected = sample.isFullPass || saturated ? nil : DowntimeEstimate.iterationsToTarget(
            remainingBytes: remaining, inFlightBytes: Double(sample.inFlightRawBytes),
            rawBytesPerSecond: rates.rawBytesPerSecond, dirtiedPerMoved: trend.dirtiedPerMoved,
            targetMs: parameters.downtimeTargetMs, overheadMs: parameters.switchoverOverheadMs)
        let verdict = judge(isFullPass: sample.isFullPass, remaining: remaining, estimateMs: estimateMs)
        var figures = ConvergenceFigures(
            iteration: iterations, dirtyBytesPerSecond: rates.dirtyBytesPerSecond,
            transferWireBytesPerSecond: rates.wireBytesPerSecond, transferRawBytesPerSecond: rates.rawBytesPerSecond,
            remainingBytes: UInt64(remaining), projectedIterations: projected,
            estimatedDowntimeMs: estimateMs, downtimeTargetMs: parameters.downtimeTargetMs,
            stalledIterations: stall.iterationsWithoutShrink, dirtyLogSaturated: saturated, verdict: verdict, reason: "")
        figures.reason = explain(figures)
        latest = figures
        return figures
    }

    /// The rules in order: the target first (if it can be met, stop iterating),
    /// then the stronger statement (diverging) before the weaker (stalled).
    private func judge(isFullPass: Bool, remaining: Double, estimateMs: Double) -> ConvergenceVerdict {
        // After the full pass the dirty log has not been read: nothing is known yet.
        if isFullPass { return .keepIterating }
        // Nothing left: another pass cannot lower the estimate, even one the overhead keeps above the target.
        if estimateMs <= parameters.downtimeTargetMs || remaining == 0 { return .switchover }
        if divergingStreak >= parameters.divergingIterations { return .diverging }
        if stall.iterationsWithoutShrink >= parameters.maxStalledIterations { return .stalled }
        return .keepIterating
    }

    private func explain(_ f: ConvergenceFigures) -> String {
        typealias W = ConvergenceWording
        let estimate = "estimated downtime \(W.ms(f.estimatedDowntimeMs))"
        switch f.verdict {
        case .switchover where f.remainingBytes == 0:
            return "nothing left to send; \(estimate)"
        case .switchover:
            return "\(estimate) ≤ target \(W.ms(f.downtimeTargetMs))"
        case .diverging:
            let dirty = W.rate(f.dirtyBytesPerSecond ?? 0), moved = W.rate(f.transferRawBytesPerSecond)
            return "not converging: dirty rate \(dirty) ≥ transfer rate \(moved) for \(divergingStreak) iterations; \(estimate)"
        case .stalled:
            let every = f.dirtyLogSaturated ? " (every guest page dirtied each pass)" : ""
            return "not converging: remaining \(W.bytes(Double(f.remainingBytes))) has not shrunk by "
                + "\(W.percent(parameters.minimumShrinkFraction)) for \(f.stalledIterations) iterations\(every); \(estimate)"
        case .keepIterating:
            let left = if let n = f.projectedIterations { "\(n) more iterations projected" }
                else if f.dirtyBytesPerSecond == nil { "no projection before the dirty log is read" }
                else { "not converging at this iteration's pace" }
            return "\(estimate) > target \(W.ms(f.downtimeTargetMs)); \(left)"
        }
    }
}

/// Counts iterations in a row in which the remaining set did not shrink by the
/// minimum fraction below the reference. The reference is the remaining set at the
/// last real shrink, so a slow creep (5 % a pass) still counts as progress once it
/// adds up. A setback (the set grows, e.g. after one slow iteration) counts as no
/// progress and moves the reference up to it: a series that then shrinks fast again
/// is converging, however far it has to go to get back below its earlier low.
struct StallTracker: Sendable {
    let minimumShrinkFraction: Double
    private(set) var reference: Double?
    private(set) var iterationsWithoutShrink = 0

    mutating func observe(_ remaining: Double) {
        guard let reference, remaining > 0, remaining > reference * (1 - minimumShrinkFraction) else {
            reference = remaining
            iterationsWithoutShrink = 0
            return
        }
        iterationsWithoutShrink += 1
        if remaining > reference { self.reference = remaining }
    }
}

/// Bytes dirtied per byte the link could move (ρ), over a short window: the trend
/// the projection extrapolates. The median, so one odd iteration (a link hiccup
/// that ran ten times as long) does not drag the trend with it.
struct DirtyTrend: Sendable {
    let window: Int
    private var ratios: [Double] = []

    init(window: Int) { self.window = max(window, 1) }

    mutating func append(dirtied: Double, capacity: Double) {
        guard capacity > 0 else { return }
        ratios.append(dirtied / capacity)
        if ratios.count > window { ratios.removeFirst(ratios.count - window) }
    }

    /// nil until the dirty log has been read once.
    var dirtiedPerMoved: Double? {
        let sorted = ratios.sorted()
        guard !sorted.isEmpty else { return nil }
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }
}

/// The downtime formula and its projection, as pure functions.
enum DowntimeEstimate {
    /// (device stop-and-copy bytes + final dirty round + pipeline in flight) at the
    /// last iteration's raw rate, plus the fixed switch-over overhead.
    static func milliseconds(remainingBytes: Double, inFlightBytes: Double,
                             rawBytesPerSecond: Double, overheadMs: Double) -> Double {
        (remainingBytes + inFlightBytes) / rawBytesPerSecond * 1000 + overheadMs
    }

    /// Each pass sends the remaining set R at rate T while ρ·R gets dirtied, so
    /// after n passes R·ρⁿ is left: the smallest n with R·ρⁿ + in-flight ≤ (target − overhead)·T.
    /// nil when ρ ≥ 1, or when the overhead and the in-flight bytes alone exceed the target.
    static func iterationsToTarget(remainingBytes: Double, inFlightBytes: Double, rawBytesPerSecond: Double,
                                   dirtiedPerMoved: Double?, targetMs: Double, overheadMs: Double) -> Int? {
        let budget = (targetMs - overheadMs) / 1000 * rawBytesPerSecond - inFlightBytes
        if budget >= remainingBytes { return 0 }
        guard budget > 0, let rho = dirtiedPerMoved, rho < 1 else { return nil }
        if rho <= 0 { return 1 }
        let passes = (log(budget / remainingBytes) / log(rho)).rounded(.up)
        return passes < 1_000_000 ? max(Int(passes), 1) : nil
    }
}
