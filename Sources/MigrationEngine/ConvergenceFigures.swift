import Foundation

/// What the convergence model says after an iteration.
public enum ConvergenceVerdict: String, Sendable, Codable, CaseIterable {
    /// The remaining set is shrinking but the estimate is still above the target.
    case keepIterating
    /// The estimated downtime is at or below the target (or nothing is left to send).
    case switchover
    /// The remaining set has not shrunk by the minimum fraction for `maxStalledIterations`.
    case stalled
    /// The dirty rate has been at or above the transfer rate for `divergingIterations` in a row.
    case diverging

    /// Stalled and diverging are what `--on-stall` acts on.
    public var isStall: Bool { self == .stalled || self == .diverging }
}

/// The figures behind a verdict, for progress events and the JSON stream.
/// Rates are bytes per second; sizes are bytes.
public struct ConvergenceFigures: Sendable, Codable, Equatable {
    /// 1-based, as in the `iteration` events.
    public var iteration: Int
    /// Bytes dirtied per second (device state growth + dirtied guest pages);
    /// nil after the full pass, before the dirty log was first read.
    public var dirtyBytesPerSecond: Double?
    /// Bytes per second on the wire (capped by the bandwidth limit in force).
    public var transferWireBytesPerSecond: Double
    /// The same in state bytes, through the compression ratio: what is compared with the dirty rate.
    public var transferRawBytesPerSecond: Double
    /// Device bytes still to send + this round's dirty page bytes.
    public var remainingBytes: UInt64
    /// Further iterations until the estimate meets the target; nil = not
    /// converging (or not known yet, after the full pass: then `dirtyBytesPerSecond` is nil too).
    public var projectedIterations: Int?
    public var estimatedDowntimeMs: Double
    public var downtimeTargetMs: Double
    /// Iterations in a row without a meaningful shrink of the remaining set.
    public var stalledIterations: Int
    /// The dirty log reported every guest page: the dirty rate is a lower bound,
    /// and the next round is the whole guest again.
    public var dirtyLogSaturated: Bool
    public var verdict: ConvergenceVerdict
    /// One sentence for the log and the switch-over event.
    public var reason: String
}

/// The estimate next to what happened, for the summary and the JSON stats.
public struct DowntimeComparison: Sendable, Codable, Equatable {
    /// The model's estimate at the iteration that ended pre-copy.
    public var estimatedMs: Double
    public var measuredMs: Double
    public var targetMs: Double

    public init(estimatedMs: Double, measuredMs: Double, targetMs: Double) {
        self.estimatedMs = estimatedMs; self.measuredMs = measuredMs; self.targetMs = targetMs
    }

    /// Measured over estimated: above 1, the model was optimistic.
    public var measuredOverEstimated: Double? { estimatedMs > 0 ? measuredMs / estimatedMs : nil }
}

/// Byte and rate wording for `reason` (the engine has no formatter of its own).
enum ConvergenceWording {
    static func bytes(_ n: Double) -> String {
        n >= 1_000_000 ? String(format: "%.1f MB", n / 1_000_000) : String(format: "%.0f kB", n / 1000)
    }
    static func rate(_ n: Double) -> String { bytes(n) + "/s" }
    static func ms(_ n: Double) -> String { String(format: "%.0f ms", n) }
    static func percent(_ fraction: Double) -> String { String(format: "%.0f %%", fraction * 100) }
}
