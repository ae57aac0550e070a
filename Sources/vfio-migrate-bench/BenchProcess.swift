import Foundation
import MigrationEngine

/// The binaries a bench run starts: the sibling `vfio-migrate` for the
/// migrations (what is measured is the shipped program, not a copy linked into
/// the bench), and this binary itself for the baselines' processes.
struct BenchExecutables {
    let bench: String
    let migrate: String

    /// `vfio-migrate` in the bench's own folder (the same build), or an error naming the path.
    static func locate() throws(BenchError) -> BenchExecutables {
        let own = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let migrate = URL(fileURLWithPath: own).deletingLastPathComponent().appendingPathComponent("vfio-migrate").path
        guard FileManager.default.isExecutableFile(atPath: migrate) else { throw .migrateBinaryMissing(path: migrate) }
        return BenchExecutables(bench: own, migrate: migrate)
    }
}

/// One figure set read from /proc/PID/status and /proc/PID/stat.
struct ProcSample: Sendable {
    var rssAnon: UInt64 = 0   // bytes
    var vmHWM: UInt64 = 0     // bytes (includes the shared guest-memory mapping)
    var cpuSeconds: Double = 0
    var ok = false

    static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    static func read(pid: Int32) -> ProcSample {
        var s = ProcSample()
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return s }
        for line in status.split(separator: "\n") {
            if line.hasPrefix("RssAnon:") { s.rssAnon = kib(line) }
            else if line.hasPrefix("VmHWM:") { s.vmHWM = kib(line) }
        }
        // utime and stime are fields 14 and 15; the command name (field 2) may hold spaces, so count after ')'.
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
           let close = stat.lastIndex(of: ")") {
            let f = stat[stat.index(after: close)...].split(separator: " ")
            if f.count > 12, let u = Double(f[11]), let k = Double(f[12]) { s.cpuSeconds = (u + k) / ticksPerSecond }
        }
        s.ok = true
        return s
    }

    private static func kib(_ line: Substring) -> UInt64 {
        (line.split(separator: " ").dropFirst().first.flatMap { UInt64($0) } ?? 0) * 1024
    }
}

/// A child process of the benchmark: its stdout JSON lines, stderr text, and
/// `/proc` samples (peak RssAnon, VmHWM, CPU) up to its `finished` event, so
/// that the state dump after the migration does not count.
final class BenchChild: @unchecked Sendable {
    let name: String
    let process = Process()
    private let lock = NSCondition()
    private var events: [[String: Any]] = []
    private var stderrText = Data()
    private var stdoutDone = false, stderrDone = false
    private var cutoff = false
    private(set) var peakRssAnon: UInt64 = 0
    private(set) var peakHWM: UInt64 = 0
    private(set) var samples = 0
    /// CPU seconds when the child reported it connected and when it finished (nil: not seen).
    private(set) var cpuAtConnect: Double?
    private(set) var cpuAtFinish: Double?
    private(set) var lastCPU: Double = 0
    private var started = ContinuousClock.now
    private(set) var wallSeconds: Double = 0
    var pid: Int32 { process.processIdentifier }

    init(name: String, executable: String, arguments: [String]) {
        self.name = name
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
    }

    func start() throws {
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        started = ContinuousClock.now
        try process.run()
        // Pipes are drained on their own threads (blocking reads) so a chatty child never stalls.
        Thread.detachNewThread { [self] in
            var pending = Data()
            let h = out.fileHandleForReading
            while true {
                let d = h.availableData
                if d.isEmpty { break }
                pending.append(d)
                while let nl = pending.firstIndex(of: 0x0A) {
                    let line = pending[pending.startIndex..<nl]
                    pending = Data(pending[(nl + 1)...])
                    if let o = (try? JSONSerialization.jsonObject(with: line)) as? [String: Any] { handleEvent(o) }
                }
            }
            lock.lock(); stdoutDone = true; lock.broadcast(); lock.unlock()
        }
        Thread.detachNewThread { [self] in
            let d = err.fileHandleForReading.readDataToEndOfFile()
            lock.lock(); stderrText = d; stderrDone = true; lock.broadcast(); lock.unlock()
        }
    }

    /// VFIO_BENCH_TRACE=1: every sample and event on stderr, to see where a peak comes from.
    static let trace = ProcessInfo.processInfo.environment["VFIO_BENCH_TRACE"] == "1"
    private func traceLine(_ s: String) {
        FileHandle.standardError.write(Data(String(format: "trace %8.3f %@ %@\n", (ContinuousClock.now - started).seconds, name, s).utf8))
    }

    private func handleEvent(_ o: [String: Any]) {
        let event = o["event"] as? String
        if Self.trace, event != "progress" { traceLine("event \(event ?? "?") \(o["phase"] ?? "")") }
        // CPU read at the event itself: separates start-up (corpus image, certificates) and the dump from the migration.
        let cpu = (event == "connected" || event == "finished") ? ProcSample.read(pid: pid) : nil
        lock.lock()
        events.append(o)
        if event == "connected", cpuAtConnect == nil, let cpu, cpu.ok { cpuAtConnect = cpu.cpuSeconds }
        if event == "finished", let cpu {
            if cpu.ok { cpuAtFinish = cpu.cpuSeconds; record(cpu) }
            cutoff = true
        }
        lock.unlock()
    }

    /// Called by the sampler thread.
    func sample() {
        let s = ProcSample.read(pid: pid)
        guard s.ok else { return }
        if Self.trace { traceLine("rssAnon \(s.rssAnon >> 20) MiB cpu \(s.cpuSeconds)") }
        lock.lock()
        lastCPU = max(lastCPU, s.cpuSeconds)
        if !cutoff { record(s) }
        lock.unlock()
    }

    private func record(_ s: ProcSample) {
        peakRssAnon = max(peakRssAnon, s.rssAnon)
        peakHWM = max(peakHWM, s.vmHWM)
        samples += 1
    }

    var isRunning: Bool { process.isRunning }

    /// Waits for exit and both pipes; returns the exit code.
    @discardableResult
    func wait() -> Int32 {
        process.waitUntilExit()
        lock.lock()
        while !(stdoutDone && stderrDone) { lock.wait() }
        lock.unlock()
        wallSeconds = (ContinuousClock.now - started).seconds
        return process.terminationStatus
    }

    func terminate() { if process.isRunning { process.terminate() } }

    var allEvents: [[String: Any]] { lock.lock(); defer { lock.unlock() }; return events }
    var stderr: String { lock.lock(); defer { lock.unlock() }; return String(decoding: stderrText, as: UTF8.self) }
    func event(_ name: String) -> [String: Any]? { allEvents.last { $0["event"] as? String == name } }
    var finishedStats: [String: Any]? { event("finished")?["stats"] as? [String: Any] }
    /// CPU seconds of the migration itself (connect → finished), else the whole life.
    var migrationCPU: Double {
        lock.lock(); defer { lock.unlock() }
        if let a = cpuAtConnect, let b = cpuAtFinish { return b - a }
        return cpuAtFinish ?? lastCPU
    }
    var totalCPU: Double { lock.lock(); defer { lock.unlock() }; return max(lastCPU, cpuAtFinish ?? 0) }
}

/// Samples the children's /proc figures every `intervalMs` on its own thread.
final class BenchSampler: Sendable {
    private let task: PeriodicTask

    init(children: [BenchChild], intervalMs: Int = 20) {
        task = PeriodicTask(name: "bench-sampler", interval: .milliseconds(intervalMs)) {
            for c in children where c.isRunning { c.sample() }
            return true
        }
    }

    func stop() { task.stop() }
}

/// Waits for a `--port-file` written by a child (0.5 s steps … `seconds`).
func benchWaitForPort(_ path: String, child: BenchChild, seconds: Double = 60) throws -> UInt16 {
    let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
    while ContinuousClock.now < deadline {
        if let s = try? String(contentsOfFile: path, encoding: .utf8),
           let port = UInt16(s.trimmingCharacters(in: .whitespacesAndNewlines)) { return port }
        if !child.isRunning {
            let status = child.wait()
            throw BenchError.childExitedEarly(name: child.name, status: status, stderr: child.stderr)
        }
        usleep(10_000)
    }
    throw BenchError.portFileTimeout(name: child.name, path: path, seconds: Int(seconds))
}

/// Kills the children of a run that takes longer than allowed.
final class Watchdog: @unchecked Sendable {
    private let c = NSCondition()
    private var cancelled = false
    private var fired = false

    init(seconds: Double, children: [BenchChild]) {
        Thread.detachNewThread { [self] in
            c.lock()
            let deadline = Date(timeIntervalSinceNow: seconds)
            while !cancelled, c.wait(until: deadline) {}
            if !cancelled { fired = true; for ch in children { ch.terminate() } }
            c.unlock()
        }
    }

    /// Stops the watchdog; true if it had fired.
    @discardableResult
    func cancel() -> Bool {
        c.lock(); defer { c.unlock() }
        cancelled = true
        c.broadcast()
        return fired
    }
}
