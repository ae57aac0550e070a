import Foundation
import SyncPrimitives

/// One QEMU reference migration on one link: two QEMU processes (the
/// destination in the destination's namespace), configured over QMP, the
/// source polled until QEMU reports the migration final. The row carries
/// QEMU's own `total-time` and downtime, and the CPU seconds each process
/// spent from the migrate command to completion.
struct QemuRun {
    let commandLine: QemuCommandLine
    let downtimeMs: Double
    let timeoutSeconds: Double

    /// The processes of one run and their monitors.
    private struct Pair {
        let source, destination: BenchChild
        let sourceQMP, destinationQMP: QMPConnection
    }

    func run(_ qemuCase: QemuCase, endpoints: LinkEndpoints, guestBytes: UInt64) -> BenchRow {
        var row = BenchRow(name: qemuCase.title, kind: "qemu", mode: qemuCase.rawValue)
        row.corpusBytes = guestBytes
        var children: [BenchChild] = []
        defer { try? FileManager.default.removeItem(atPath: commandLine.destinationFile) }
        do {
            defer { stop(children) }
            let pair = try start(endpoints, children: &children)
            try configure(pair, qemuCase)
            try migrate(pair, endpoints: endpoints, into: &row)
        } catch {
            row.problems.append("\(error)")
        }
        // QEMU's result is checked like ours: the destination's RAM, once QEMU has quit, must be the corpus.
        if row.problems.isEmpty && !benchFilesEqual(commandLine.guestFile, commandLine.destinationFile) {
            row.problems.append("QEMU's destination RAM differs from the corpus")
        }
        row.verified = row.problems.isEmpty
        return row
    }

    private func start(_ endpoints: LinkEndpoints, children: inout [BenchChild]) throws(BenchError) -> Pair {
        func launch(_ role: QemuCommandLine.Role, _ prefix: [String]) throws(BenchError) -> (BenchChild, QMPConnection) {
            let child = BenchChild(name: "QEMU \(role.rawValue)", executable: QemuCommandLine.executable,
                                   arguments: commandLine.arguments(role), prefix: prefix, takesInput: true)
            do { try child.start() } catch { throw .commandFailed(command: [QemuCommandLine.executable], status: -1, stderr: "\(error)") }
            children.append(child)
            return (child, try QMPConnection.open(child, timeoutSeconds: timeoutSeconds))
        }
        let (d, dq) = try launch(.destination, endpoints.destinationPrefix)
        let (s, sq) = try launch(.source, endpoints.sourcePrefix)
        return Pair(source: s, destination: d, sourceQMP: sq, destinationQMP: dq)
    }

    private func configure(_ p: Pair, _ c: QemuCase) throws(BenchError) {
        for q in [p.sourceQMP, p.destinationQMP] {
            try q.execute("migrate-set-capabilities", ["capabilities": c.capabilities])
            try q.execute("migrate-set-parameters", c.parameters)
        }
        try p.sourceQMP.execute("migrate-set-parameters", QemuCase.sourceParameters(downtimeMs: downtimeMs))
    }

    private func migrate(_ p: Pair, endpoints: LinkEndpoints, into row: inout BenchRow) throws(BenchError) {
        let uri = "tcp:\(endpoints.destinationAddress):\(try PlainTCP.unusedLoopbackPort())"
        try p.destinationQMP.execute("migrate-incoming", ["uri": uri])
        let cpu0 = (ProcSample.read(pid: p.source.pid).cpuSeconds, ProcSample.read(pid: p.destination.pid).cpuSeconds)
        let t0 = monotonicSeconds()
        try p.sourceQMP.execute("migrate", ["uri": uri])
        let source = try poll(p.sourceQMP, until: monotonicSeconds() + timeoutSeconds, done: \.isSettled)
        // The destination completes when it has loaded the last section, a little after the source; it keeps no times.
        let destination = try poll(p.destinationQMP, until: monotonicSeconds() + 30, done: \.isFinal)
        row.cpuSource = ProcSample.read(pid: p.source.pid).cpuSeconds - cpu0.0
        row.cpuDestination = ProcSample.read(pid: p.destination.pid).cpuSeconds - cpu0.1
        row.processWallSeconds = monotonicSeconds() - t0
        row.wallSeconds = (source.totalTimeMs ?? 0) / 1000
        row.downtimeMs = source.downtimeMs
        row.wireBytes = source.transferredBytes
        if source.status != .completed { row.problems.append("source: \(source.status) \(source.errorDescription ?? "")") }
        if destination.status != .completed { row.problems.append("destination: \(destination.status) \(destination.errorDescription ?? "")") }
    }

    /// query-migrate every 10 ms until `done` or the deadline passes. On the
    /// source that is `isSettled`: QEMU 7.2 reports `completed` a moment before
    /// it has computed total-time and downtime (both read 0 then).
    private func poll(_ q: QMPConnection, until deadline: Double, done: (QemuMigrationInfo) -> Bool) throws(BenchError) -> QemuMigrationInfo {
        while true {
            let info = try q.queryMigrate()
            if done(info) || monotonicSeconds() > deadline { return info }
            usleep(10_000)
        }
    }

    /// `quit` over QMP; whatever still runs after 10 s is terminated.
    private func stop(_ children: [BenchChild]) {
        let watchdog = Watchdog(seconds: 10, children: children)
        for c in children where c.isRunning { c.send(Data(#"{"execute":"quit"}"#.utf8 + [0x0A])) }
        for c in children { c.wait() }
        watchdog.cancel()
    }
}
