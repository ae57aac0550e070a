import Glibc
import MigrationControl
import SyncPrimitives

/// The VMM's end of the control socket a `vfio-migrate` child inherits as
/// `--control fd:N` (one end of a socketpair): the event loop, and the answers
/// to the transport's requests (docs/EVENTS.md, "Requests to the VMM").
final class ControlChannel {
    let client: ControlClient
    /// The end the child inherits; ours is closed once it has it, so its exit reads as EOF here.
    private var childEnd: Int32?

    init() throws(TestVMMError) {
        var ends: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0 else {
            throw .setup("socketpair: \(String(cString: strerror(errno)))")
        }
        client = ControlClient(connected: ends[0])
        childEnd = ends[1]
    }

    deinit { if let childEnd { close(childEnd) } }

    var childDescriptor: Int32 { childEnd ?? -1 }

    func childStarted() {
        if let childEnd { close(childEnd) }
        childEnd = nil
    }

    /// Sends one command without waiting for its reply (it comes through `serve`).
    func send(_ command: String, _ arguments: [String: JSONValue], descriptor: Int32? = nil) throws(ControlError) {
        var request: [String: JSONValue] = ["execute": .string(command)]
        if !arguments.isEmpty { request["arguments"] = .object(arguments) }
        let line = JSONValue.object(request).jsonLine + "\n"
        try client.send(raw: Array(line.utf8), descriptor: descriptor)
    }

    /// Reads until `finished` or `failed` (or a hang-up), calling `handle` for each
    /// event; its label is the event's name (`phase:NAME` for a phase). Error
    /// replies (to the VMM's own commands) go to `refused`.
    func serve(timeoutSeconds: Double, _ handle: (_ label: String, _ event: JSONValue) throws(ControlError) -> Void) throws(TestVMMError) -> VMMSession {
        var session = VMMSession()
        let deadline = monotonicSeconds() + timeoutSeconds
        do throws(ControlError) {
            while session.outcome == nil {
                let message = try client.nextMessage(timeoutSeconds: max(0.1, deadline - monotonicSeconds()))
                guard let name = message["event"]?.stringValue else {
                    if let error = message["error"] { session.refused.append("\(error)") }
                    continue
                }
                let label = name == "phase" ? "phase:\(message["data"]?["phase"]?.stringValue ?? "?")" : name
                session.events.append(label)
                try handle(label, message)
                if name == "finished" { session.outcome = .finished }
                if name == "failed" { session.outcome = .failed(message["data"]?["cause"]?.stringValue ?? "\(message)") }
            }
        } catch {
            guard case .serverClosed = error else { throw .control("\(error) after events \(session.events)") }
            session.outcome = .hungUp
        }
        return session
    }

    /// Does `work`, then sends `command` echoing the event's `request`; a failed
    /// `work` is answered with `error`, as a VMM that cannot comply does.
    func answer(_ command: String, to event: JSONValue, _ work: () throws(KVMError) -> Void) throws(ControlError) {
        var arguments: [String: JSONValue] = ["request": event["data"]?["request"] ?? .null]
        do throws(KVMError) { try work() } catch { arguments["error"] = .string("\(error)") }
        try send(command, arguments)
    }
}

/// What the transport said on one control socket.
public struct VMMSession: Sendable {
    public enum Outcome: Sendable, Equatable {
        case finished
        case failed(String)
        /// The transport closed the socket without `finished` or `failed`.
        case hungUp
    }

    /// Event names in arrival order (`phase:commit` for a phase).
    public var events: [String] = []
    /// Error replies to the VMM's commands (none expected).
    public var refused: [String] = []
    public var outcome: Outcome?
}

public enum TestVMMError: Error, CustomStringConvertible {
    case guest(KVMError)
    case setup(String)
    case control(String)

    public var description: String {
        switch self {
        case .guest(let error): "the test VMM's guest: \(error)"
        case .setup(let why): "the test VMM's setup: \(why)"
        case .control(let why): "the test VMM's control socket: \(why)"
        }
    }
}
