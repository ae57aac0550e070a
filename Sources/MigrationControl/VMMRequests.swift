import SyncPrimitives

/// What the transport asks of the VMM over the control socket. Each is an event
/// the VMM answers with a command of its own (the reply-as-command pattern):
/// the event carries `"request": N`, the answer may echo it.
public enum VMMRequest: String, Sendable, CaseIterable {
    /// Source, at switch-over: pause the vCPUs, then send `guest-stopped`.
    case stopGuest = "stop-guest"
    /// Source, after a failure before COMMIT: run the vCPUs again, then `guest-resumed`.
    case resumeGuest = "resume-guest"
    /// Destination, after COMMIT: run the vCPUs, then `guest-started`.
    case startGuest = "start-guest"
    /// Source, each round with `--dirty vmm`: fill the dirty-log bitmap, then `dirty-synced`.
    case dirtySync = "dirty-sync"
    /// Source, `--on-stall throttle`: take `percent` % of the vCPUs' time away
    /// (0 lifts it), then `throttled`.
    case throttle = "throttle"

    /// The command that answers this request.
    public var answer: String {
        switch self {
        case .stopGuest: "guest-stopped"
        case .resumeGuest: "guest-resumed"
        case .startGuest: "guest-started"
        case .dirtySync: "dirty-synced"
        case .throttle: "throttled"
        }
    }

    static func answering(_ command: String) -> VMMRequest? { allCases.first { $0.answer == command } }
}

/// How an `ask` ended.
public enum VMMAnswer: Sendable, Equatable {
    /// The VMM answered; its arguments (minus `request`) are passed on.
    case answered([String: JSONValue])
    /// Nobody is connected: the caller behaves as without a VMM (today's behaviour).
    case noController
    /// The controller disconnected before answering.
    case controllerGone
    case timedOut
    /// Another ask of the same kind replaced this one.
    case superseded
    case serverClosed
}

/// The outstanding requests, one per kind, and the waiters for their answers.
final class VMMRequests: Sendable {
    private struct Pending { var sequence: Int; var answer: [String: JSONValue]? }
    private struct State {
        var controllerGeneration = 0
        var connected = false
        var closed = false
        var nextSequence = 1
        var pending: [VMMRequest: Pending] = [:]
    }
    private let state = ConditionValue(State())

    var hasController: Bool { state.withLock { $0.connected } }

    /// Registers a request before its event goes out (so an immediate answer finds it).
    func open(_ request: VMMRequest) -> (sequence: Int, generation: Int)? {
        state.withLock { s in
            guard s.connected, !s.closed else { return nil }
            defer { s.nextSequence += 1 }
            s.pending[request] = Pending(sequence: s.nextSequence)
            return (s.nextSequence, s.controllerGeneration)
        }
    }

    func wait(for request: VMMRequest, sequence: Int, generation: Int, deadline: Double?) -> VMMAnswer {
        state.wait(until: { s in
            s.closed || s.controllerGeneration != generation || s.pending[request]?.sequence != sequence
                || s.pending[request]?.answer != nil
        }, deadline: deadline) { s, timedOut in
            if s.closed { return .serverClosed }
            if s.controllerGeneration != generation { return .controllerGone }
            guard let pending = s.pending[request], pending.sequence == sequence else { return .superseded }
            if let answer = pending.answer { s.pending[request] = nil; return .answered(answer) }
            s.pending[request] = nil
            return timedOut ? .timedOut : .controllerGone
        }
    }

    /// The VMM's answer command. `request`, when given, must name the outstanding one.
    func answer(_ command: String, arguments: [String: JSONValue]) throws(ControlError) {
        guard let request = VMMRequest.answering(command) else { throw .unknownCommand(command) }
        var rest = arguments
        let echoed = rest.removeValue(forKey: "request")
        if let echoed, echoed.intValue == nil {
            throw .invalidArgument(command: command, argument: "request", reason: "must be the integer from the \(request.rawValue) event")
        }
        try state.withLock { (s: inout State) throws(ControlError) in
            guard let pending = s.pending[request], pending.answer == nil else { throw .noPendingRequest(command) }
            if let n = echoed?.intValue, n != Int64(pending.sequence) {
                throw .invalidArgument(command: command, argument: "request", reason: "is \(n), the outstanding \(request.rawValue) is \(pending.sequence)")
            }
            s.pending[request]?.answer = rest
        }
    }

    func controllerConnected() { state.withLock { $0.connected = true } }

    /// Unanswered requests die with the controller that was asked.
    func controllerDisconnected() {
        state.withLock { s in
            s.connected = false
            s.controllerGeneration += 1
            s.pending.removeAll()
        }
    }

    func close() { state.withLock { $0.closed = true; $0.connected = false } }
}
