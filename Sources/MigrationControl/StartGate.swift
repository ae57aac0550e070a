import SyncPrimitives

/// `start` (`--await-start`): the transport opens nothing until the VMM has
/// handed over what it needs (`add-fd`, `dirty-log-setup`) and says so. `start`
/// is refused, changing nothing, while a descriptor the command line names is
/// missing, so the VMM can add it and try again.
public final class StartGate: Sendable {
    public enum Outcome: Sendable, Equatable {
        case started
        /// `cancel` before `start`: nothing was opened, nothing to roll back.
        case cancelled
        case timedOut
        case serverClosed
    }
    private enum State { case waiting, started, cancelled, closed }

    /// Table names the command line refers to (`fd:guest-ram`, `dirty-log`).
    public let requiredDescriptors: [String]
    private let state = ConditionValue(State.waiting)

    public init(requiredDescriptors: [String]) { self.requiredDescriptors = requiredDescriptors }

    /// The `start` command: refused when a required descriptor is not in `table`, or twice.
    func start(table: DescriptorTable) throws(ControlError) {
        let present = Set(table.names)
        if let missing = requiredDescriptors.first(where: { !present.contains($0) }) {
            throw .refused(Self.missingText(missing))
        }
        try state.withLock { (s: inout State) throws(ControlError) in
            guard s == .waiting else { throw .refused("start: the migration has \(s == .started ? "already started" : "ended")") }
            s = .started
        }
    }

    static func missingText(_ name: String) -> String {
        name == DirtyLogLayout.descriptorName
            ? "start: no dirty-log-setup yet (--dirty vmm / --guest-dirty-log need the bitmap first)"
            : "start: no descriptor named '\(name)' was added (add-fd) yet"
    }

    func cancel() { state.withLock { if $0 == .waiting { $0 = .cancelled } } }
    func close() { state.withLock { if $0 == .waiting { $0 = .closed } } }

    /// Blocks until `start`, `cancel`, the server closing, or `timeoutSeconds`.
    public func wait(timeoutSeconds: Double) -> Outcome {
        state.wait(until: { $0 != .waiting }, deadline: monotonicSeconds() + timeoutSeconds) { s, timedOut in
            switch s {
            case .started: return .started
            case .cancelled: return .cancelled
            case .closed: return .serverClosed
            case .waiting:
                // Late `start`s are refused from now on: the CLI is giving up.
                s = .closed
                return timedOut ? .timedOut : .serverClosed
            }
        }
    }
}
