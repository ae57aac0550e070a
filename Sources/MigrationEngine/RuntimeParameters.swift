import SyncPrimitives

/// The settings an operator may change while pre-copy runs (the control
/// socket's `set` and `switchover`). The session reads one snapshot at each
/// iteration boundary, so a change never applies half-way through a pass.
public struct RuntimeParameters: Sendable, Equatable {
    public var downtimeTargetMs: Double
    public var maxIterations: Int
    /// Asked to stop iterating: honoured at the next iteration boundary.
    public var switchoverRequested = false
    /// Pre-copy has ended (stop-and-copy began): later changes would be ignored, so they are refused.
    public var switchoverBegun = false
}

/// Why a live change was refused.
public enum ParameterChangeError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Stop-and-copy has begun: nothing left for the setting to act on.
    case switchoverBegun
    case outOfRange(parameter: String, value: String)

    public var description: String {
        switch self {
        case .switchoverBegun: return "switch-over has begun; the migration no longer takes new settings"
        case let .outOfRange(parameter, value): return "\(parameter) \(value) is out of range"
        }
    }
}

/// The shared box: `Sender`'s setters write it from any thread, the session reads it.
final class RuntimeControl: Sendable {
    private let state: LockedValue<RuntimeParameters>

    init(_ options: SenderOptions) {
        state = LockedValue(RuntimeParameters(downtimeTargetMs: options.downtimeTargetMs, maxIterations: options.maxIterations))
    }

    var current: RuntimeParameters { state.current }

    /// Applies `change` unless switch-over has begun.
    func update(_ change: (inout RuntimeParameters) -> Void) throws(ParameterChangeError) {
        try state.withLock { (p: inout RuntimeParameters) throws(ParameterChangeError) in
            guard !p.switchoverBegun else { throw .switchoverBegun }
            change(&p)
        }
    }

    /// Pre-copy is over; returns the parameters it ended with.
    func beginSwitchover() -> RuntimeParameters {
        state.withLock { p in p.switchoverBegun = true; return p }
    }

    /// A new session starts with pre-copy open again (a request made before it stays).
    func startSession() { state.withLock { $0.switchoverBegun = false } }
}
