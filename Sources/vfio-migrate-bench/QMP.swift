import Foundation

/// One line QEMU's monitor (QMP) sent, as the client needs to tell them apart.
enum QMPMessage {
    case greeting
    case event(name: String)
    case reply(Any)
    case error(errorClass: String, description: String)
    case unrecognised

    init(_ o: [String: Any]) {
        if o["QMP"] != nil { self = .greeting }
        else if let e = o["event"] as? String { self = .event(name: e) }
        else if let r = o["return"] { self = .reply(r) }
        else if let e = o["error"] as? [String: Any] {
            self = .error(errorClass: e["class"] as? String ?? "?", description: e["desc"] as? String ?? "")
        } else { self = .unrecognised }
    }

    /// A command's answer (reply or error), as opposed to the greeting and asynchronous events.
    var isAnswer: Bool {
        switch self {
        case .reply, .error: return true
        default: return false
        }
    }
}

/// The part of QEMU's `query-migrate` answer the bench reports (QEMU's own
/// clock: `total-time` runs from the migrate command to completion, connection
/// and TLS setup included).
struct QemuMigrationInfo: Equatable {
    enum Status: Equatable {
        case running(String)   // setup, active, device, …
        case completed, failed, cancelled
        /// Destination before migrate-incoming, or a source before migrate: no status yet.
        case none
    }
    var status: Status
    var totalTimeMs: Double?
    var downtimeMs: Double?
    var setupTimeMs: Double?
    var transferredBytes: UInt64?
    var errorDescription: String?

    init(_ o: [String: Any]) {
        switch o["status"] as? String {
        case nil: status = .none
        case "completed": status = .completed
        case "failed": status = .failed
        case "cancelled": status = .cancelled
        case let s?: status = .running(s)
        }
        func number(_ v: Any?) -> Double? { (v as? NSNumber)?.doubleValue }
        totalTimeMs = number(o["total-time"])
        downtimeMs = number(o["downtime"])
        setupTimeMs = number(o["setup-time"])
        transferredBytes = ((o["ram"] as? [String: Any])?["transferred"] as? NSNumber)?.uint64Value
        errorDescription = o["error-desc"] as? String
    }

    var isFinal: Bool {
        switch status {
        case .completed, .failed, .cancelled: return true
        default: return false
        }
    }

    /// Final, and for a completed migration with its figures computed
    /// (QEMU 7.2 sets the status first, then total-time: a moment when both read 0).
    var isSettled: Bool { isFinal && (status != .completed || (totalTimeMs ?? 0) > 0) }
}

/// A QMP conversation over a QEMU child's stdin/stdout (`-qmp stdio`): one
/// command at a time, each answered before the next is sent.
struct QMPConnection {
    let child: BenchChild
    let timeoutSeconds: Double

    /// Waits for the greeting (QEMU has built its machine, guest RAM included) and leaves negotiation mode.
    static func open(_ child: BenchChild, timeoutSeconds: Double) throws(BenchError) -> QMPConnection {
        let c = QMPConnection(child: child, timeoutSeconds: timeoutSeconds)
        guard child.awaitObject(from: 0, timeoutSeconds: timeoutSeconds, where: { if case .greeting = QMPMessage($0) { true } else { false } }) != nil else {
            throw .qmp(process: child.name, command: "(greeting)", detail: c.silence)
        }
        _ = try c.execute("qmp_capabilities")
        return c
    }

    @discardableResult
    func execute(_ command: String, _ arguments: [String: Any] = [:]) throws(BenchError) -> Any {
        var request: [String: Any] = ["execute": command]
        if !arguments.isEmpty { request["arguments"] = arguments }
        guard let line = try? JSONSerialization.data(withJSONObject: request) else { throw .qmp(process: child.name, command: command, detail: "arguments are not JSON") }
        let mark = child.objectCount
        child.send(line + Data("\n".utf8))
        guard let answer = child.awaitObject(from: mark, timeoutSeconds: timeoutSeconds, where: { QMPMessage($0).isAnswer }) else {
            throw .qmp(process: child.name, command: command, detail: silence)
        }
        switch QMPMessage(answer) {
        case .reply(let r): return r
        case .error(let cls, let desc): throw .qmp(process: child.name, command: command, detail: "\(cls): \(desc)")
        default: throw .qmp(process: child.name, command: command, detail: "unexpected answer")
        }
    }

    func queryMigrate() throws(BenchError) -> QemuMigrationInfo {
        QemuMigrationInfo((try execute("query-migrate") as? [String: Any]) ?? [:])
    }

    private var silence: String {
        let err = child.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
        return "no answer within \(Int(timeoutSeconds)) s\(child.isRunning ? "" : ", QEMU exited")\(err.isEmpty ? "" : ": \(err.suffix(400))")"
    }
}
