import CommandLineSupport
import Foundation
import MigrationControl
import MigrationEngine
import MigrationTLS
import SyncPrimitives

/// Renders engine events: a one-line progress display on a TTY, plain lines
/// otherwise, or one JSON object per line with `--json` (for orchestrators).
final class EventPrinter: @unchecked Sendable {  // mutable display state only under `lock`
    enum Mode { case human, json }
    private let mode: Mode
    private let side: String
    private let lock = Lock()
    private let isTTY = isatty(STDERR_FILENO) == 1
    private var lastLineWasProgress = false
    private let quiet: Bool
    /// Gets every event as its `--json` line and that line's timestamp, whatever the mode (the control socket).
    private var mirror: (@Sendable (Data, EventTimestamp) -> Void)?
    /// One per process, shared with the control socket, so both channels stamp alike.
    private let clock: EventClock

    init(mode: Mode, side: String, quiet: Bool = false, clock: EventClock = EventClock()) {
        self.mode = mode; self.side = side; self.quiet = quiet; self.clock = clock
    }

    /// From now on every event also goes to `sink`, as the line `--json` prints.
    func mirror(to sink: @escaping @Sendable (Data, EventTimestamp) -> Void) { lock.withLock { mirror = sink } }

    func handle(_ event: MigrationEvent) {
        lock.withLock {
            if mode == .json || mirror != nil { output(EventFields.json(event, side: side)) }
            if mode == .human, !quiet { emitHuman(event) }
        }
    }

    /// The final error, in the same form as the events.
    func failed(_ error: MigrationError, deviceStates: [(name: String, state: String)] = []) {
        lock.withLock { failedLocked(error, deviceStates: deviceStates) }
    }

    private func failedLocked(_ error: MigrationError, deviceStates: [(name: String, state: String)]) {
        if mode == .json || mirror != nil { output(EventFields.failed(error, side: side, deviceStates: deviceStates)) }
        switch mode {
        case .json: break
        case .human:
            endProgressLine()
            var text = "vfio-migrate \(side): \(error.description)\n"
            if !deviceStates.isEmpty { text += "vfio-migrate \(side): device state now: " + deviceStates.map { "\($0.name) \($0.state)" }.joined(separator: ", ") + "\n" }
            FileHandle.standardError.write(Data(text.utf8))
        }
    }

    private func emitHuman(_ event: MigrationEvent) {
        switch event {
        case .connected(let peer): line("\(side): connected to \(peer)")
        case .helloAccepted(let devices, let mem, let security, let streams, let lanes, _):
            line("\(side): HELLO accepted: \(devices.count) device(s) [\(devices.joined(separator: ", "))], guest memory \(formatBytes(mem))"
                 + (streams > 1 ? ", \(streams) TLS streams" : "") + (lanes > 0 ? ", \(lanes) zstd lanes" : ""))
            // This host's own warnings were printed at start; the peer's are news.
            let peerOnly = SessionSecurity(peerCertificateNotAfter: security.peerCertificateNotAfter)
            for warning in peerOnly.warnings() { line("\(side): warning: \(warning)") }
        case .phase(let p): if p != .done { line("\(side): phase \(p)") }
        case .progress(let p):
            let eta = p.etaSeconds.map { String(format: " eta %.1fs", $0) } ?? ""
            let converging = p.convergence.map { "  " + ConvergenceText.line($0) } ?? ""
            let encoding = p.encoding.map { "  encoding \($0.choice) (\($0.reason))" } ?? ""
            let text = String(format: "%@: %@ iter %d  raw %@  wire %@  %@/s  pending %@  dirty %llu pages%@%@%@",
                              side, p.phase.rawValue, p.iteration, formatBytes(p.rawBytes), formatBytes(p.wireBytes),
                              formatBytes(UInt64(p.bytesPerSecond)), formatBytes(p.pendingBytes), p.dirtyPages, eta, converging, encoding)
                + LinkText.suffix(p.link)
            if isTTY {
                FileHandle.standardError.write(Data("\r\u{1B}[K\(text)".utf8))
                lastLineWasProgress = true
            } else {
                line(text)
            }
        case .iterationEnd(let i, let pending, let dirty, let est, let c):
            if !isTTY {
                line(String(format: "%@: iteration %d done: pending %@, %llu dirty pages, estimated downtime %.0f ms; %@",
                            side, i, formatBytes(pending), dirty, est, ConvergenceText.line(c)))
            }
        case .switchover(let reason): line("\(side): switch-over: \(reason)")
        case .deviceEnd(let d, let bytes, let chunks): line("\(side): device \(d): \(formatBytes(bytes)) in \(chunks) chunks")
        case .sessionRefused(let why): line("\(side): refused a peer: \(why)")
        case .connectionLost(let why): line("\(side): connection lost, session kept: \(why)")
        case .reconnecting(let n, let s): line(String(format: "%@: reconnecting, attempt %d, %.1f s after the loss", side, n, s))
        case .resumed(let r, let b): line("\(side): session resumed from frame \(r), \(formatBytes(b)) replayed")
        case .finished(let s): line(summary(s))
        }
    }

    private func line(_ text: String) {
        endProgressLine()
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    private func endProgressLine() {
        if lastLineWasProgress { FileHandle.standardError.write(Data("\n".utf8)); lastLineWasProgress = false }
    }

    /// One event's `--json` line, stamped: printed with `--json`, mirrored to the control socket.
    private func output(_ fields: [String: Any]) {
        let time = clock.now()
        var stamped = fields
        stamped["timestamp"] = EventFields.timestamp(time)
        guard let data = try? JSONSerialization.data(withJSONObject: stamped, options: [.sortedKeys]) else { return }
        if mode == .json { FileHandle.standardOutput.write(data + Data("\n".utf8)) }
        mirror?(data, time)
    }

    func summary(_ s: MigrationStats) -> String {
        var lines: [String] = []
        let rate = s.totalSeconds > 0 ? Double(s.rawBytes) / s.totalSeconds : 0
        let estimate = s.downtimeComparison.map { String(format: " (estimated %.0f ms, target %.0f ms)", $0.estimatedMs, $0.targetMs) } ?? ""
        lines.append("\(side): migration complete in \(String(format: "%.2f", s.totalSeconds)) s, downtime \(String(format: "%.0f", s.downtimeMs)) ms\(estimate), \(s.iterations) pre-copy iteration(s)\(s.converged ? "" : " (did not converge: switched over above the target)")")
        let ratio = s.rawBytes > 0 ? Double(s.wireBytes) / Double(s.rawBytes) * 100 : 0
        lines.append("\(side):   data \(formatBytes(s.rawBytes)) raw, \(formatBytes(s.wireBytes)) on the wire (\(String(format: "%.1f", ratio)) %), \(formatBytes(UInt64(rate)))/s; pages \(s.pagesSent) (\(s.zeroPages) zero, \(s.copiedPages) copies)")
        for d in s.devices {
            lines.append("\(side):   device \(d.name): \(formatBytes(d.bytes)) in \(d.chunks) chunks (pre-copy \(formatBytes(d.precopyBytes)), stop-copy \(formatBytes(d.stopcopyBytes))), \(d.digestAlgorithm) \(d.digest.prefix(16))…")
        }
        return lines.joined(separator: "\n")
    }
}

/// Seconds since 1970 UTC as an RFC 3339 timestamp (`2026-11-30T05:32:00Z`).
func rfc3339(_ epochSeconds: Int64) -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime]
    return f.string(from: Date(timeIntervalSince1970: TimeInterval(epochSeconds)))
}

/// The convergence figures for people (one clause) and for orchestrators (flat JSON fields).
/// Version 2: the progress line's note on the connection once it broke, and the
/// downtime an outage lengthens.
enum LinkText {
    static func suffix(_ link: LinkFigures?) -> String {
        guard let link, link.connection != .up || link.outageSeconds > 0 else { return "" }
        let downtime = link.downtimeSoFarMs.map { String(format: ", downtime so far %.0f ms", $0) } ?? ""
        return String(format: "  connection %@ (%.1f s without one%@)", link.connection.rawValue, link.outageSeconds, downtime)
    }
}

enum ConvergenceText {
    /// `dirty 38.0 MB/s vs 40.0 MB/s, ~2 more iteration(s)`, or `... not converging`.
    static func line(_ c: ConvergenceFigures) -> String {
        guard let dirty = c.dirtyBytesPerSecond else {
            return "transfer \(formatBytes(UInt64(c.transferRawBytesPerSecond)))/s, dirty rate not known before the dirty log is read"
        }
        let rates = "dirty \(formatBytes(UInt64(dirty)))/s vs \(formatBytes(UInt64(c.transferRawBytesPerSecond)))/s"
        switch (c.verdict, c.projectedIterations) {
        case (.switchover, _): return "\(rates), at the target"
        case (.stalled, _), (.diverging, _), (.keepIterating, nil): return "\(rates), not converging"
        case (.keepIterating, let n?): return "\(rates), ~\(n) more iteration(s)"
        }
    }

    static func fields(_ c: ConvergenceFigures) -> [String: Any] {
        var o: [String: Any] = [
            "transfer_bytes_per_second": c.transferRawBytesPerSecond, "transfer_wire_bytes_per_second": c.transferWireBytesPerSecond,
            "remaining_bytes": c.remainingBytes, "downtime_target_ms": c.downtimeTargetMs, "stalled_iterations": c.stalledIterations,
            "dirty_log_saturated": c.dirtyLogSaturated, "verdict": c.verdict.rawValue, "convergence_reason": c.reason,
            // Known and finite: the projection says it converges.
            "converging": c.verdict == .switchover || c.projectedIterations != nil,
        ]
        if let d = c.dirtyBytesPerSecond { o["dirty_bytes_per_second"] = d }
        if let n = c.projectedIterations { o["projected_iterations"] = n }
        return o
    }
}

/// Every event name `--json` prints: docs/EVENTS.md's event table lists each (a test
/// checks both ways), so a new event is a case here and a row there.
enum EventName: String, CaseIterable {
    case connected, hello, phase, progress, iteration, switchover
    case deviceEnd = "device_end"
    case refused, finished, failed
    case connectionLost = "connection-lost"
    case reconnecting, resumed
}

/// Each event as the flat JSON object `--json` prints (and the control socket
/// sends as the event's `data`): one place for the field names.
enum EventFields {
    /// The control socket's `timestamp` object (docs/EVENTS.md, "Timestamps"), for a `--json` line.
    static func timestamp(_ time: EventTimestamp) -> Any {
        (try? JSONSerialization.jsonObject(with: Data(time.jsonObject.jsonLine.utf8))) ?? [:]
    }

    static func json(_ event: MigrationEvent, side: String) -> [String: Any] {
        var o: [String: Any] = ["side": side]
        switch event {
        case .connected(let peer): o["event"] = EventName.connected.rawValue; o["peer"] = peer
        case .helloAccepted(let d, let m, let security, let streams, let lanes, let digest):
            o["event"] = EventName.hello.rawValue; o["devices"] = d; o["memory_bytes"] = m; o["streams"] = streams
            o["zstd_lanes"] = lanes; o["device_digest"] = digest.description
            o["development_certificates"] = security.developmentCertificates
            if let t = security.ownCertificateNotAfter { o["certificate_not_after"] = rfc3339(t) }
            if let t = security.peerCertificateNotAfter { o["peer_certificate_not_after"] = rfc3339(t) }
            o["warnings"] = security.warnings()
        case .phase(let p): o["event"] = EventName.phase.rawValue; o["phase"] = p.rawValue
        case .progress(let p): o.merge(progress(p)) { a, _ in a }
        case .iterationEnd(let i, let p, let d, let e, let c):
            o["event"] = EventName.iteration.rawValue; o["iteration"] = i; o["pending_bytes"] = p; o["dirty_pages"] = d; o["estimated_downtime_ms"] = e
            o.merge(ConvergenceText.fields(c)) { a, _ in a }
        case .switchover(let r): o["event"] = EventName.switchover.rawValue; o["reason"] = r
        case .deviceEnd(let d, let b, let c): o["event"] = EventName.deviceEnd.rawValue; o["device"] = d; o["bytes"] = b; o["chunks"] = c
        case .sessionRefused(let why): o["event"] = EventName.refused.rawValue; o["reason"] = why
        case .connectionLost(let why): o["event"] = EventName.connectionLost.rawValue; o["reason"] = why
        case .reconnecting(let n, let s): o["event"] = EventName.reconnecting.rawValue; o["attempt"] = n; o["elapsed_seconds"] = s
        case .resumed(let r, let b): o["event"] = EventName.resumed.rawValue; o["from_sequence"] = r; o["bytes_replayed"] = b
        case .finished(let s):
            o["event"] = EventName.finished.rawValue
            if let data = try? JSONEncoder().encode(s), let stats = try? JSONSerialization.jsonObject(with: data) { o["stats"] = stats }
        }
        return o
    }

    private static func progress(_ p: MigrationEngine.Progress) -> [String: Any] {
        var o: [String: Any] = [
            "event": EventName.progress.rawValue, "phase": p.phase.rawValue, "iteration": p.iteration,
            "raw_bytes": p.rawBytes, "wire_bytes": p.wireBytes, "bytes_per_second": p.bytesPerSecond,
            "pending_bytes": p.pendingBytes, "dirty_pages": p.dirtyPages,
        ]
        if let eta = p.etaSeconds { o["eta_seconds"] = eta }
        if let c = p.convergence { o.merge(ConvergenceText.fields(c)) { a, _ in a } }
        if let e = p.encoding {
            o["encoding"] = e.choice
            o["encoding_reason"] = e.reason
            if let link = e.linkBytesPerSecond { o["link_bytes_per_second"] = link }
            o["encoding_batches"] = e.batches
        }
        if let link = p.link {
            o["connection"] = link.connection.rawValue
            o["outage_seconds"] = link.outageSeconds
            if let d = link.downtimeSoFarMs { o["downtime_so_far_ms"] = d }
        }
        return o
    }

    static func failed(_ error: MigrationError, side: String, deviceStates: [(name: String, state: String)]) -> [String: Any] {
        var o: [String: Any] = ["event": EventName.failed.rawValue, "side": side, "phase": error.phase.rawValue,
                                "cause": "\(error.failure)", "disposition": "\(error.disposition)",
                                "exit_code": Int(error.disposition.rawValue), "message": error.description]
        if let d = error.device { o["device"] = d }
        if let r = error.rollbackFailure { o["rollback_failure"] = r }
        if !deviceStates.isEmpty { o["device_states"] = Dictionary(deviceStates.map { ($0.name, $0.state) }, uniquingKeysWith: { a, _ in a }) }
        return o
    }
}
