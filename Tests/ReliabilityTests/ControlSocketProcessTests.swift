import Foundation
import Glibc
import MigrationControl
import TestSupport
import Testing

/// `--control` on the real binary: a controller steers a `send` in pre-copy. Each
/// test starts the slow pair (8 MiB of guest at 2 MB/s, a workload, an
/// unreachable target), so the full pass takes seconds: commands sent at its
/// start act at the boundary that ends it.
@Suite(.serialized)
struct ControlSocketProcessTests {
    /// The slow pair with `send --control unix:DIR/ctl.sock`, a controller connected,
    /// and pre-copy begun (the controller saw the `phase precopy` event).
    static func startControlled(_ dir: String, extra: [String] = []) throws -> (CLIProcess, CLIProcess, ControlClient) {
        try CLI.makeMemory("\(dir)/src.mem", pages: 2048)
        let (receiver, port) = try CLI.receiver(dir: dir, memory: "8M")
        let sender = try CLI.sender(dir: dir, port: port, extra: ProcessFaultTests.slow + ["--control", "unix:\(dir)/ctl.sock"] + extra)
        let client = try connect("\(dir)/ctl.sock", process: sender)
        _ = try client.nextMessage()  // the greeting
        while try client.nextEvent(named: "phase", timeoutSeconds: 20)["data"]?["phase"] != .string("precopy") {}
        return (sender, receiver, client)
    }

    /// The socket exists before anything starts; retried while the process comes up.
    static func connect(_ path: String, process: CLIProcess) throws -> ControlClient {
        for _ in 0..<400 {
            if let client = try? ControlClient(path: path) { return client }
            if !process.process.isRunning { break }
            usleep(25_000)
        }
        throw SetupError("no control socket at \(path): \(process.stderr)")
    }

    static func finishedStats(_ p: CLIProcess) -> [String: Any]? {
        p.events.last { $0["event"] as? String == "finished" }?["stats"] as? [String: Any]
    }

    /// `query` reports the phase and the live settings; `set` lifts the limit and
    /// raises the target mid-pass, and the migration then finishes; events carry
    /// timestamps and the `--json` field names.
    @Test func setMidMigrationMakesItFinish() throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (sender, receiver, client) = try Self.startControlled(dir)
        let before = try client.execute("query")
        #expect(before["return"]?["phase"] == .string("precopy"), "\(before)")
        #expect(before["return"]?["parameters"]?["bandwidth"] == .int(2 << 20), "\(before)")  // 2M
        let set = try client.execute("set", ["bandwidth": .string("unlimited"), "downtime-ms": .int(1000)])
        #expect(set["return"] != nil, "\(set)")
        let after = try client.execute("query")
        #expect(after["return"]?["parameters"]?["bandwidth"] == .string("unlimited"), "\(after)")
        #expect(after["return"]?["parameters"]?["downtime-ms"]?.numberValue == 1000, "\(after)")
        let started = Date()
        #expect(sender.wait(timeout: 30) == 0, "\(sender.stderr)")
        #expect(receiver.wait(timeout: 30) == 0, "\(receiver.stderr)")
        #expect(Date().timeIntervalSince(started) < 8)
        #expect(Self.finishedStats(sender)?["converged"] as? Bool == true, "\(String(describing: Self.finishedStats(sender)))")
        let progress = try client.nextEvent(named: "progress")
        #expect(progress["timestamp"]?["rfc3339"]?.stringValue != nil, "\(progress)")
        #expect(progress["data"]?["side"] == .string("source") && progress["data"]?["raw_bytes"] != nil, "\(progress)")
        _ = try client.nextEvent(named: "finished")
    }

    /// `switchover` ends pre-copy at the boundary after it: asked during the full
    /// pass (iteration 0 done when asked), the migration has at most one iteration.
    @Test func switchoverEndsPrecopyEarly() throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (sender, receiver, client) = try Self.startControlled(dir)
        let asked = try #require(client.execute("query")["return"]?["iteration"]?.intValue)
        #expect(try client.execute("switchover")["return"] != nil)
        #expect(sender.wait(timeout: 30) == 0, "\(sender.stderr)")
        #expect(receiver.wait(timeout: 30) == 0, "\(receiver.stderr)")
        let iterations = try #require(Self.finishedStats(sender)?["iterations"] as? Int)
        #expect(iterations <= Int(asked) + 1, "asked at \(asked), finished after \(iterations)")
        let reason = try client.nextEvent(named: "switchover")["data"]?["reason"]?.stringValue ?? ""
        #expect(reason.contains("requested by the controller"), "\(reason)")
        // Once stop-and-copy has begun (here: the process is gone) nothing more is taken.
    }

    /// `cancel` rolls the source back (exit 2, devices RUNNING); the destination's
    /// control socket refuses `set` and `switchover` (it has no pre-copy).
    @Test func cancelRollsBackAndTheDestinationRefusesSteering() throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try CLI.makeMemory("\(dir)/src.mem", pages: 2048)
        let (receiver, port) = try CLI.receiver(dir: dir, memory: "8M", extra: ["--control", "unix:\(dir)/dst.sock"])
        let destination = try Self.connect("\(dir)/dst.sock", process: receiver)
        _ = try destination.nextMessage()  // the greeting
        #expect(try destination.execute("set", ["downtime-ms": .int(5)])["error"]?["desc"]?.stringValue?.contains("destination") == true)
        #expect(try destination.execute("switchover")["error"]?["desc"]?.stringValue?.contains("destination") == true)
        let sender = try CLI.sender(dir: dir, port: port, extra: ProcessFaultTests.slow + ["--control", "unix:\(dir)/ctl.sock"])
        let client = try Self.connect("\(dir)/ctl.sock", process: sender)
        while try client.nextEvent(named: "phase", timeoutSeconds: 20)["data"]?["phase"] != .string("precopy") {}
        #expect(try client.execute("cancel")["return"] != nil)
        #expect(sender.wait(timeout: 30) == 2, "\(sender.stderr)")
        #expect(receiver.wait(timeout: 30) == 2, "\(receiver.stderr)")
        let failed = try client.nextEvent(named: "failed")
        #expect(failed["data"]?["device_states"] == .object(["gpu0": .string("RUNNING"), "nic0": .string("RUNNING")]), "\(failed)")
        #expect(ProcessFaultTests.states(sender.failed) == ["gpu0": "RUNNING", "nic0": "RUNNING"])
    }
}
