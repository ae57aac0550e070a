import Foundation
import Glibc
import MigrationControl
import TestSupport
import Testing

/// `--guest-handshake` on the real binary: a controller plays the VMM and answers
/// `stop-guest` (issue 15 §3). The slow pair, switched over at once by the controller.
@Suite(.serialized)
struct GuestHandshakeProcessTests {
    /// Reads events until `finished`/`failed`, answering `stop-guest` with `answer`
    /// (its arguments besides `request`); returns the event names seen.
    static func playVMM(_ client: ControlClient, answer: [String: JSONValue], sender: CLIProcess) throws -> [String] {
        var seen: [String] = []
        while true {
            let event = try client.nextMessage(timeoutSeconds: 40)
            guard let name = event["event"]?.stringValue else { continue }  // replies to our commands
            seen.append(name)
            if name == "finished" || name == "failed" { return seen }
            guard name == "stop-guest", let request = event["data"]?["request"] else { continue }
            let arguments = answer.merging(["request": request]) { $1 }
            try client.send(raw: Array((JSONValue.object(["execute": .string("guest-stopped"), "arguments": .object(arguments)]).jsonLine + "\n").utf8))
        }
    }

    @Test func guestStoppedAnsweredSwitchesOverAfterTheStop() throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (sender, receiver, client) = try ControlSocketProcessTests.startControlled(dir, extra: ["--guest-handshake"])
        #expect(try client.execute("switchover")["return"] != nil)
        let seen = try Self.playVMM(client, answer: [:], sender: sender)
        #expect(sender.wait(timeout: 30) == 0, "\(sender.stderr)")
        #expect(receiver.wait(timeout: 30) == 0, "\(receiver.stderr)")
        let stop = try #require(seen.firstIndex(of: "stop-guest"), "\(seen)")
        let end = try #require(seen.firstIndex(of: "device_end"), "\(seen)")
        #expect(stop < end, "the guest stops before the final round: \(seen)")
        #expect(!seen.contains("resume-guest"), "\(seen)")
    }

    /// A VMM that answers with `error`: the source rolls back (exit 2, devices
    /// RUNNING), names the cause and asks to resume the guest.
    @Test func refusedStopGuestRollsBackAndAsksToResume() throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (sender, receiver, client) = try ControlSocketProcessTests.startControlled(dir, extra: ["--guest-handshake"])
        #expect(try client.execute("switchover")["return"] != nil)
        let seen = try Self.playVMM(client, answer: ["error": .string("vCPU 0 will not pause")], sender: sender)
        #expect(sender.wait(timeout: 30) == 2, "\(sender.stderr)")
        #expect(receiver.wait(timeout: 30) == 2, "\(receiver.stderr)")
        #expect(seen.contains("resume-guest"), "\(seen)")
        let cause = sender.failed?["cause"] as? String ?? ""
        #expect(cause.contains("vCPU 0 will not pause"), "the cause is named: \(String(describing: sender.failed))")
        #expect(ProcessFaultTests.states(sender.failed) == ["gpu0": "RUNNING", "nic0": "RUNNING"])
    }

    /// The VMM goes away while `stop-guest` is outstanding: roll back, the cause says so.
    @Test func controllerGoneDuringStopGuestRollsBack() throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (sender, receiver, client) = try ControlSocketProcessTests.startControlled(dir, extra: ["--guest-handshake"])
        #expect(try client.execute("switchover")["return"] != nil)
        while try client.nextMessage(timeoutSeconds: 40)["event"]?.stringValue != "stop-guest" {}
        shutdown(client.fd, Int32(SHUT_RDWR))  // the VMM is gone (the fd itself is closed with the client)
        #expect(sender.wait(timeout: 30) == 2, "\(sender.stderr)")
        #expect(receiver.wait(timeout: 30) == 2, "\(receiver.stderr)")
        let cause = sender.failed?["cause"] as? String ?? ""
        #expect(cause.contains("disconnected before answering stop-guest"), "\(String(describing: sender.failed))")
        #expect(ProcessFaultTests.states(sender.failed) == ["gpu0": "RUNNING", "nic0": "RUNNING"])
    }
}
