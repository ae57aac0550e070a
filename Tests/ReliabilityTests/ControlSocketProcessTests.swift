import Foundation
import Glibc
import MigrationControl
import TestSupport
import Testing

/// `--control` on the real binary: a controller steers a `send` in pre-copy. Each
/// test starts the slow pair (8 MiB of guest at 2 MB/s uncompressed, a workload,
/// an unreachable target), so the full pass takes seconds: commands sent at its
/// start act at the boundary that ends it.
@Suite(.serialized)
struct ControlSocketProcessTests {
    /// Uncompressed, so the full pass really takes seconds at 2 MB/s (compressed it is over in half a second).
    static let slow = ProcessFaultTests.slow + ["--compress", "none"]

    /// The slow pair with `send --control unix:DIR/ctl.sock`, a controller connected,
    /// and pre-copy begun (the controller saw the `phase precopy` event).
    static func startControlled(_ dir: String, extra: [String] = []) throws -> (CLIProcess, CLIProcess, ControlClient) {
        try writeGuestMemoryFile("\(dir)/src.mem", pages: 2048)
        let (receiver, port) = try CLI.receiver(dir: dir, memory: "8M")
        let sender = try CLI.sender(dir: dir, port: port, extra: Self.slow + ["--control", "unix:\(dir)/ctl.sock"] + extra)
        let client = try connect("\(dir)/ctl.sock", process: sender)
        do {
            _ = try client.nextMessage()  // the greeting
            try waitForPrecopy(client)
        } catch {
            throw SetupError("waiting for pre-copy on the control socket: \(error); events \(client.events); source: \(sender.stderr)")
        }
        return (sender, receiver, client)
    }

    /// Events are not replayed to a controller that connects late, so ask.
    static func waitForPrecopy(_ client: ControlClient) throws {
        for _ in 0..<2000 {
            if try client.execute("query")["return"]?["phase"] == .string("precopy") { return }
            usleep(10_000)
        }
        throw SetupError("pre-copy did not begin")
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
        let reasons = sender.events.filter { $0["event"] as? String == "switchover" }.compactMap { $0["reason"] as? String }
        #expect(iterations <= Int(asked) + 1, "asked at \(asked), finished after \(iterations): \(reasons)")
        #expect(reasons.contains { $0.contains("requested by the controller") }, "\(reasons)")
    }

    /// `cancel` rolls the source back (exit 2, devices RUNNING); the destination's
    /// control socket refuses `set` and `switchover` (it has no pre-copy).
    @Test func cancelRollsBackAndTheDestinationRefusesSteering() throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeGuestMemoryFile("\(dir)/src.mem", pages: 2048)
        let (receiver, port) = try CLI.receiver(dir: dir, memory: "8M", extra: ["--control", "unix:\(dir)/dst.sock"])
        let destination = try Self.connect("\(dir)/dst.sock", process: receiver)
        _ = try destination.nextMessage()  // the greeting
        #expect(try destination.execute("set", ["downtime-ms": .int(5)])["error"]?["desc"]?.stringValue?.contains("destination") == true)
        #expect(try destination.execute("switchover")["error"]?["desc"]?.stringValue?.contains("destination") == true)
        let sender = try CLI.sender(dir: dir, port: port, extra: ProcessFaultTests.slow + ["--control", "unix:\(dir)/ctl.sock"])
        let client = try Self.connect("\(dir)/ctl.sock", process: sender)
        _ = try client.nextMessage()  // the greeting
        try Self.waitForPrecopy(client)
        #expect(try client.execute("cancel")["return"] != nil)
        #expect(sender.wait(timeout: 30) == 2, "\(sender.stderr)")
        #expect(receiver.wait(timeout: 30) == 2, "\(receiver.stderr)")
        let failed = try client.nextEvent(named: "failed")
        #expect(failed["data"]?["device_states"] == .object(["gpu0": .string("RUNNING"), "nic0": .string("RUNNING")]), "\(failed)")
        #expect(ProcessFaultTests.states(sender.failed) == ["gpu0": "RUNNING", "nic0": "RUNNING"])
    }

    /// The pair at 8 MB/s: the workload dirties faster than that, so pre-copy diverges
    /// two iterations after the full pass and `--on-stall throttle` acts.
    static let diverging = ["--on-stall", "throttle", "--bandwidth", "8M"]

    /// `--on-stall throttle` with a controller: each step up the ladder is a `throttle`
    /// request the VMM answers with `throttled`; the session lifts it (percent 0) at the end.
    @Test func throttleAsksTheControllerAndLiftsItAtTheEnd() throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (sender, receiver, client) = try Self.startControlled(dir, extra: Self.diverging)
        var percents: [Int64] = []
        var switchedOver = false
        var seen: [String] = []
        while true {
            let event: JSONValue
            do { event = try client.nextMessage(timeoutSeconds: 20) } catch {
                Issue.record("\(error) after \(seen); source: \(sender.stderr)")
                break
            }
            guard let name = event["event"]?.stringValue else { continue }  // replies to our commands
            seen.append(name)
            if name == "finished" || name == "failed" { break }
            guard name == "throttle", let data = event["data"], let request = data["request"] else { continue }
            percents.append(data["percent"]?.intValue ?? -1)
            try client.send(raw: Array((JSONValue.object(["execute": .string("throttled"), "arguments": .object(["request": request])]).jsonLine + "\n").utf8))
            if percents.count >= 2, !switchedOver {
                try client.send(raw: Array(#"{"execute": "switchover"}"#.utf8) + [10])
                switchedOver = true
            }
        }
        #expect(sender.wait(timeout: 30) == 0, "\(sender.stderr)")
        #expect(receiver.wait(timeout: 30) == 0, "\(receiver.stderr)")
        #expect(percents.prefix(2) == [20, 30], "\(percents)")
        #expect(percents.last == 0, "the throttle is lifted at the end: \(percents)")
    }

    /// `--on-stall throttle` with the socket open but nobody connected: as without a
    /// VMM, the stall switches over.
    @Test func throttleWithoutAControllerSwitchesOver() throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeGuestMemoryFile("\(dir)/src.mem", pages: 2048)
        let (receiver, port) = try CLI.receiver(dir: dir, memory: "8M")
        let sender = try CLI.sender(dir: dir, port: port, extra: ProcessFaultTests.slow + Self.diverging + ["--control", "unix:\(dir)/ctl.sock"])
        #expect(sender.wait(timeout: 30) == 0, "\(sender.stderr)")
        #expect(receiver.wait(timeout: 30) == 0, "\(receiver.stderr)")
        let reasons = sender.events.filter { $0["event"] as? String == "switchover" }.compactMap { $0["reason"] as? String }
        #expect(reasons.contains { $0.contains("no controller is connected") }, "\(reasons)")
    }
}
