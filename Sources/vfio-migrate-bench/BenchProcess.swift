import Foundation
import SyncPrimitives
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
final class BenchChild: @unchecked Sendable {  // a Process, configured before start; the rest is `state`
    let name: String
    let process = Process()
    let started = ContinuousClock.now

    /// Everything the pipe readers and the sampler record, only under its lock.
    private struct Observed {
        var events: [[String: Any]] = []
        var stderrText = Data()
        var stdoutDone = false, stderrDone = false
        var cutoff = false
        var peakRssAnon: UInt64 = 0
        var peakHWM: UInt64 = 0
        var samples = 0
        /// CPU seconds when the child reported it connected and when it finished (nil: not seen).
        var cpuAtConnect: Double?
        var cpuAtFinish: Double?
        var lastCPU: Double = 0
        var wallSeconds: Double = 0

        mutating func record(_ s: ProcSample) {
            peakRssAnon = max(peakRssAnon, s.rssAnon)
            peakHWM = max(peakHWM, s.vmHWM)
            samples += 1
        }
    }
    private let state = ConditionValue(Observed())
    var pid: Int32 { process.processIdentifier }

    /// The child's stdin when it takes commands (QEMU's QMP), else nil (/dev/null).
    private let input: Pipe?

    /// `prefix` runs the child through another program that execs it (`ip netns exec NS`):
    /// the pid, and so every /proc sample, stays the child's.
    init(name: String, executable: String, arguments: [String], prefix: [String] = [], takesInput: Bool = false) {
        self.name = name
        if prefix.isEmpty && executable.hasPrefix("/") {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        } else {  // env finds a bare name on PATH, and execs: the pid stays the child's
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = prefix + [executable] + arguments
        }
        input = takesInput ? Pipe() : nil
    }

    func start() throws {
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input ?? FileHandle.nullDevice
        try process.run()
        // An interrupted bench must not leave children behind (they may hold a namespace).
        BenchInterrupt.shared.register("child-\(pid)") { [self] in
            terminate()
            // Up to 2 s for it to go: its namespace and its files are removed next.
            for _ in 0..<200 where isRunning { usleep(10_000) }
        }
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
            state.withLock { $0.stdoutDone = true }
        }
        Thread.detachNewThread { [self] in
            let d = err.fileHandleForReading.readDataToEndOfFile()
            state.withLock { $0.stderrText = d; $0.stderrDone = true }
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
        state.withLock { s in
            s.events.append(o)
            if event == "connected", s.cpuAtConnect == nil, let cpu, cpu.ok { s.cpuAtConnect = cpu.cpuSeconds }
            if event == "finished", let cpu {
                if cpu.ok { s.cpuAtFinish = cpu.cpuSeconds; s.record(cpu) }
                s.cutoff = true
            }
        }
    }

    /// Called by the sampler thread.
    func sample() {
        let sample = ProcSample.read(pid: pid)
        guard sample.ok else { return }
        if Self.trace { traceLine("rssAnon \(sample.rssAnon >> 20) MiB cpu \(sample.cpuSeconds)") }
        state.withLock { s in
            s.lastCPU = max(s.lastCPU, sample.cpuSeconds)
            if !s.cutoff { s.record(sample) }
        }
    }

    var isRunning: Bool { process.isRunning }

    /// Writes to the child's stdin (a child made with `takesInput`).
    func send(_ data: Data) {
        guard let input, process.isRunning else { return }
        try? input.fileHandleForWriting.write(contentsOf: data)
    }

    /// How many JSON objects the child has printed so far.
    var objectCount: Int { state.withLock { $0.events.count } }

    /// The first object at index `from` or later that matches, waiting up to
    /// `timeoutSeconds`; nil on timeout or when the child's stdout ended first.
    func awaitObject(from: Int, timeoutSeconds: Double, where matches: @escaping ([String: Any]) -> Bool) -> [String: Any]? {
        let deadline = monotonicSeconds() + timeoutSeconds
        func found(_ s: Observed) -> [String: Any]? { s.events.dropFirst(from).first(where: matches) }
        return state.wait(until: { found($0) != nil || $0.stdoutDone }, deadline: deadline) { s, _ in found(s) }
    }

    /// Waits for exit and both pipes; returns the exit code.
    @discardableResult
    func wait() -> Int32 {
        process.waitUntilExit()
        let wall = (ContinuousClock.now - started).seconds
        state.wait(until: { $0.stdoutDone && $0.stderrDone }) { s, _ in s.wallSeconds = wall }
        BenchInterrupt.shared.unregister("child-\(pid)")
        return process.terminationStatus
    }

    func terminate() { if process.isRunning { process.terminate() } }

    var allEvents: [[String: Any]] { state.withLock { $0.events } }
    var stderr: String { state.withLock { String(decoding: $0.stderrText, as: UTF8.self) } }
    var peakRssAnon: UInt64 { state.withLock { $0.peakRssAnon } }
    var peakHWM: UInt64 { state.withLock { $0.peakHWM } }
    var samples: Int { state.withLock { $0.samples } }
    var wallSeconds: Double { state.withLock { $0.wallSeconds } }
    func event(_ name: String) -> [String: Any]? { allEvents.last { $0["event"] as? String == name } }
    var finishedStats: [String: Any]? { event("finished")?["stats"] as? [String: Any] }
    /// CPU seconds of the migration itself (connect → finished), else the whole life.
    var migrationCPU: Double {
        state.withLock { s in
            if let a = s.cpuAtConnect, let b = s.cpuAtFinish { return b - a }
            return s.cpuAtFinish ?? s.lastCPU
        }
    }
    var totalCPU: Double { state.withLock { max($0.lastCPU, $0.cpuAtFinish ?? 0) } }
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
final class Watchdog: Sendable {
    private struct Flags { var cancelled = false, fired = false }
    private let flags = ConditionValue(Flags())

    init(seconds: Double, children: [BenchChild]) {
        let deadline = monotonicSeconds() + seconds
        Thread.detachNewThread { [flags] in
            flags.wait(until: { $0.cancelled }, deadline: deadline) { f, timedOut in
                guard timedOut, !f.cancelled else { return }
                f.fired = true
                for child in children { child.terminate() }
            }
        }
    }

    /// Stops the watchdog; true if it had fired.
    @discardableResult
    func cancel() -> Bool {
        flags.withLock { f in
            f.cancelled = true
            return f.fired
        }
    }
}
