/// What to do when pre-copy stalls or diverges (`--on-stall`).
public enum StallPolicy: String, Sendable, Codable, CaseIterable {
    /// Stop iterating and switch over now: today's end state, without the wasted passes.
    case switchover
    /// Cancel: the VM keeps running on the source (the command exits 2).
    case rollback
    /// Ask the VMM to slow the guest, step by step; without a controller, `switchover`.
    case throttle
}

/// QEMU auto-converge's steps of guest CPU throttling (migration/options.c:
/// `cpu-throttle-initial` 20, `cpu-throttle-increment` 10, `max-cpu-throttle` 99;
/// QEMU also never throttles above 99 so the guest keeps making progress).
/// One step per stalled or diverging iteration; it never steps down during a
/// migration (QEMU neither): whoever attached the controller lifts it at the end.
public struct ThrottleLadder: Sendable, Equatable {
    public static let autoConvergeInitialPercent = 20
    public static let autoConvergeIncrementPercent = 10
    public static let autoConvergeMaxPercent = 99

    public let initialPercent: Int
    public let incrementPercent: Int
    public let maxPercent: Int
    /// 0 = the guest is not throttled.
    public private(set) var currentPercent = 0

    /// QEMU's defaults.
    public init() {
        initialPercent = Self.autoConvergeInitialPercent
        incrementPercent = Self.autoConvergeIncrementPercent
        maxPercent = Self.autoConvergeMaxPercent
    }

    public init(initialPercent: Int, incrementPercent: Int, maxPercent: Int) throws(ConvergenceParameterError) {
        guard (1...99).contains(maxPercent), (1...maxPercent).contains(initialPercent), incrementPercent >= 1 else {
            throw .throttlePercents(initial: initialPercent, increment: incrementPercent, max: maxPercent)
        }
        self.initialPercent = initialPercent
        self.incrementPercent = incrementPercent
        self.maxPercent = maxPercent
    }

    /// At the top: another stalled iteration means throttling did not help.
    public var isExhausted: Bool { currentPercent >= maxPercent }

    /// Steps up and returns the new percentage; nil when already at the top.
    public mutating func stepUp() -> Int? {
        guard !isExhausted else { return nil }
        currentPercent = currentPercent == 0 ? initialPercent : min(currentPercent + incrementPercent, maxPercent)
        return currentPercent
    }
}

/// What the pre-copy loop does after an iteration.
public enum ConvergenceAction: Sendable, Equatable {
    case keepIterating
    case switchOver(reason: String)
    /// Cancel before stop-and-copy; the devices stay RUNNING on the source.
    case rollBack(reason: String)
    /// Ask the VMM to throttle the guest to `percent`, then keep iterating.
    case throttle(percent: Int, reason: String)
}

/// Turns verdicts into actions under `--on-stall`. Holds the throttle ladder,
/// so keep one per migration.
public struct ConvergencePolicy: Sendable, Equatable {
    public let onStall: StallPolicy
    /// A VMM control socket that can throttle the guest is attached.
    public let controllerAttached: Bool
    public private(set) var ladder: ThrottleLadder

    public init(onStall: StallPolicy = .switchover, controllerAttached: Bool = false, ladder: ThrottleLadder = ThrottleLadder()) {
        self.onStall = onStall
        self.controllerAttached = controllerAttached
        self.ladder = ladder
    }

    public mutating func action(for figures: ConvergenceFigures) -> ConvergenceAction {
        switch figures.verdict {
        case .keepIterating: return .keepIterating
        case .switchover: return .switchOver(reason: figures.reason)
        case .stalled, .diverging: return actOnStall(figures.reason)
        }
    }

    private mutating func actOnStall(_ why: String) -> ConvergenceAction {
        switch onStall {
        case .switchover:
            return .switchOver(reason: "\(why); --on-stall switchover")
        case .rollback:
            return .rollBack(reason: "\(why); --on-stall rollback: the VM keeps running on the source")
        case .throttle where !controllerAttached:
            return .switchOver(reason: "\(why); --on-stall throttle without a VMM controller: switching over")
        case .throttle:
            guard let percent = ladder.stepUp() else {
                return .switchOver(reason: "\(why); guest throttled at \(ladder.maxPercent) % and still not converging: switching over")
            }
            return .throttle(percent: percent, reason: "\(why); throttling the guest to \(percent) %")
        }
    }
}
