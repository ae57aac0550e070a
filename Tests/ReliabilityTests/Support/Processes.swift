import Foundation
import TestSupport
import Glibc

/// The `vfio-migrate` binary SwiftPM built next to this test bundle, run as a child
/// process; stdout (one JSON event per line with --json) is collected as it arrives.
final class CLIProcess: @unchecked Sendable {
    let process = Process()
    private let out = Pipe(), err = Pipe()
    private let cond = NSCondition()
    private var lines: [String] = []
    private var stderrText = ""
    private var readersDone = 0

    /// `redirections`: shell redirections applied before the binary runs (`3<>FILE`),
    /// for descriptors the child must inherit: Foundation's `Process` passes only 0–2.
    init(_ args: [String], redirections: String? = nil) throws {
        if let redirections {
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "exec \"$0\" \"$@\" \(redirections)", BuiltBinary.vfioMigrate] + args
        } else {
            process.executableURL = URL(fileURLWithPath: BuiltBinary.vfioMigrate)
            process.arguments = args
        }
        process.currentDirectoryURL = URL(fileURLWithPath: repositoryRoot)
        process.standardOutput = out
        process.standardError = err
        try process.run()
        for (pipe, isOut) in [(out, true), (err, false)] {
            let t = Thread { [self] in
                var pending = Data()
                let h = pipe.fileHandleForReading
                while true {
                    let d = h.availableData
                    if d.isEmpty { break }
                    if isOut {
                        pending += d
                        while let nl = pending.firstIndex(of: 10) {
                            let line = String(decoding: pending[pending.startIndex..<nl], as: UTF8.self)
                            pending = Data(pending[(nl + 1)...])
                            cond.lock(); lines.append(line); cond.broadcast(); cond.unlock()
                        }
                    } else {
                        cond.lock(); stderrText += String(decoding: d, as: UTF8.self); cond.unlock()
                    }
                }
                cond.lock(); readersDone += 1; cond.broadcast(); cond.unlock()
            }
            t.start()
        }
    }

    var pid: Int32 { process.processIdentifier }

    var events: [[String: Any]] {
        cond.lock(); let l = lines; cond.unlock()
        return l.compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] }
    }
    var stderr: String { cond.lock(); defer { cond.unlock() }; return stderrText }

    /// Waits until an event satisfies `match` (or the process ends / times out).
    @discardableResult
    func waitForEvent(timeout: Double = 60, _ match: ([String: Any]) -> Bool) -> [String: Any]? {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while Date() < deadline {
            if let e = events.first(where: match) { return e }
            cond.lock()
            if readersDone == 2 { cond.unlock(); return events.first(where: match) }
            _ = cond.wait(until: min(deadline, Date(timeIntervalSinceNow: 0.05)))
            cond.unlock()
        }
        return nil
    }

    /// Exit code (or 128+signal), waiting at most `timeout` seconds (then SIGKILL, -1).
    func wait(timeout: Double = 90) -> Int32 {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(pid, SIGKILL); process.waitUntilExit(); return -1 }
        process.waitUntilExit()
        cond.lock()
        while readersDone < 2 { _ = cond.wait(until: Date(timeIntervalSinceNow: 1)) }
        cond.unlock()
        return process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
    }

    func signal(_ sig: Int32) { kill(pid, sig) }

    var failed: [String: Any]? { events.last { $0["event"] as? String == "failed" } }

    /// RSS of the process in KiB from /proc (VmRSS).
    var rssKiB: Int? {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        }
        return nil
    }
}

enum CLI {
    static func tempDir() throws -> String { try makeRunDirectory(prefix: "vfio-migrate-rel") }

    static func waitForPort(_ path: String, process: CLIProcess) throws -> UInt16 {
        try PortFile.wait(path, while: { process.process.isRunning }, diagnostics: { process.stderr })
    }

    static let devices = ["--device", "gpu0=sim:state=512K,seed=1,dirty=16,churn=4K,chunk=64K",
                          "--device", "nic0=sim:state=128K,seed=2,dirty=4,churn=1K,chunk=16K"]

    /// A listening receiver on 127.0.0.1:0 with guest memory in `dir`.
    static func receiver(dir: String, memory: String = "4M", extra: [String] = [], tls: [String] = DevCertificates.arguments("destination", "source"),
                         devices: [String] = CLI.devices) throws -> (CLIProcess, UInt16) {
        let p = try CLIProcess(["receive", "--listen", "127.0.0.1:0", "--port-file", "\(dir)/port",
                                "--memory", "\(dir)/dst.mem", "--memory-size", memory, "--create-memory",
                                "--json", "--accept-timeout", "120", "--workers", "1"] + devices + tls + extra)
        return (p, try waitForPort("\(dir)/port", process: p))
    }

    static func sender(dir: String, port: UInt16, extra: [String] = [], tls: [String] = DevCertificates.arguments("source", "destination"),
                       devices: [String] = CLI.devices) throws -> CLIProcess {
        // One stream unless the test asks for more: the default follows the host's cores,
        // and these tests count connections and cut the first.
        let streams = extra.contains("--streams") ? [] : ["--streams", "1"]
        return try CLIProcess(["send", "--connect", "127.0.0.1:\(port)", "--memory", "\(dir)/src.mem", "--json", "--workers", "1"]
                              + streams + devices + tls + extra)
    }
}
