import Foundation
import Glibc
import MigrationControl
import TestSupport
import Testing

/// docs/EVENTS.md's event table against a real two-process migration: every
/// `--json` line of both sides, and every event both control sockets push (a VMM
/// on each: `--await-start`, `--guest-handshake`), has a row, the row's fields,
/// no field the row does not list, and a well-formed timestamp.
@Suite(.serialized)
struct EventSchemaTests {
    static let handshake = ["--json", "--await-start", "--guest-handshake"]

    @Test func everyEventOfARealMigrationMatchesItsRow() throws {
        let schema = try EventSchema.load()
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try CLI.makeMemory("\(dir)/src.mem", pages: 256)
        let receiver = try CLIProcess(["receive", "--listen", "127.0.0.1:0", "--port-file", "\(dir)/port", "--memory", "\(dir)/dst.mem",
                                       "--memory-size", "1M", "--create-memory", "--accept-timeout", "60", "--workers", "1",
                                       "--control", "unix:\(dir)/dst.sock"] + Self.handshake + CLI.devices + CLI.tls("destination", "source"))
        let destinationVMM = try Self.startedController("\(dir)/dst.sock", process: receiver)
        let port = try CLI.waitForPort("\(dir)/port", process: receiver)
        let sender = try CLIProcess(["send", "--connect", "127.0.0.1:\(port)", "--memory", "\(dir)/src.mem", "--workers", "1",
                                     "--control", "unix:\(dir)/src.sock"] + Self.handshake + CLI.devices + CLI.tls("source", "destination"))
        let sourceVMM = try Self.startedController("\(dir)/src.sock", process: sender)
        let stop = try sourceVMM.nextEvent(named: "stop-guest", timeoutSeconds: 60)
        #expect(try sourceVMM.execute("guest-stopped", ["request": stop["data"]?["request"] ?? .null])["return"] != nil)
        #expect(sender.wait(timeout: 60) == 0, "\(sender.stderr)")
        #expect(receiver.wait(timeout: 60) == 0, "\(receiver.stderr)")

        let printed = (sender.events + receiver.events).map { line in
            (name: line["event"] as? String ?? "?", fields: Set(line.keys), timestamp: line["timestamp"] as? [String: Any])
        }
        let pushed = ([stop] + Self.drain(sourceVMM) + Self.drain(destinationVMM)).map { message in
            (name: message["event"]?.stringValue ?? "?", fields: Set(message["data"]?.objectValue?.keys ?? [:].keys),
             timestamp: Self.plain(message["timestamp"]))
        }
        let seen = Set((printed + pushed).map(\.name))
        #expect(seen.isSuperset(of: ["connected", "hello", "phase", "progress", "iteration", "switchover", "device_end", "finished",
                                     "stop-guest", "start-guest"]), "\(seen.sorted())")
        for event in printed + pushed {
            for problem in schema.problems(event: event.name, fields: event.fields) { Issue.record("\(problem)") }
            #expect(Self.isWellFormed(event.timestamp), "\(event.name): timestamp \(String(describing: event.timestamp))")
        }
    }

    /// Connects as the VMM, reads the greeting and sends `start` (nothing opens before it).
    static func startedController(_ path: String, process: CLIProcess) throws -> ControlClient {
        let client = try ControlSocketProcessTests.connect(path, process: process)
        _ = try client.nextMessage()
        let reply = try client.execute("start")
        guard reply["return"] != nil else { throw SetupError("start refused: \(reply)") }
        return client
    }

    /// Every message until the process closed the socket: collected events first.
    static func drain(_ client: ControlClient) -> [JSONValue] {
        var messages = client.events
        while let message = try? client.nextMessage(timeoutSeconds: 10) { messages.append(message) }
        return messages.filter { $0["event"] != nil }
    }

    static func plain(_ value: JSONValue?) -> [String: Any]? {
        guard let line = value?.jsonLine else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
    }

    /// docs/EVENTS.md, "Timestamps": UTC RFC 3339 with six fraction digits, monotonic seconds ≥ 0.
    static func isWellFormed(_ timestamp: [String: Any]?) -> Bool {
        guard let timestamp, let text = timestamp["rfc3339"] as? String,
              let monotonic = (timestamp["monotonic"] as? NSNumber)?.doubleValue,
              timestamp["seconds"] is NSNumber, timestamp["microseconds"] is NSNumber else { return false }
        return text.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z/) != nil && monotonic >= 0
    }
}
