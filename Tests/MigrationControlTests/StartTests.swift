import Foundation
import MigrationControl
import Testing

/// `start` (`--await-start`): refused, changing nothing, until every descriptor the
/// command line names is in the table; `cancel`, a timeout or the server closing
/// end the wait instead.
@Suite struct StartCommand {
    static func gated(_ names: [String]) throws -> (Rig, StartGate) {
        let gate = StartGate(requiredDescriptors: names)
        return (try Rig { $0.startGate = gate }, gate)
    }

    @Test func refusedWhereNothingWaitsForIt() throws {
        let rig = try Rig()
        #expect(try rig.client.execute("start").errorText?.contains("--await-start") == true)
        rig.server.close()
    }

    @Test func refusedUntilTheNamedDescriptorIsAddedThenStartsOnce() throws {
        let (rig, gate) = try Self.gated(["guest-ram"])
        #expect(try rig.client.execute("start").errorText == "start: no descriptor named 'guest-ram' was added (add-fd) yet")
        let memfd = makeMemfd("guest-ram")
        defer { close(memfd) }
        #expect(try rig.client.execute("add-fd", ["name": .string("guest-ram")], descriptor: memfd)["return"] != nil)
        #expect(try rig.client.execute("start", ["now": .bool(true)]).errorText?.contains("unknown argument 'now'") == true)
        #expect(try rig.client.execute("start")["return"] == .object([:]))
        #expect(gate.wait(timeoutSeconds: 10) == .started)
        #expect(try rig.client.execute("start").errorText?.contains("already started") == true)
        rig.server.close()
    }

    @Test func theDirtyLogBitmapIsNamedByItsCommand() throws {
        let (rig, gate) = try Self.gated([DirtyLogLayout.descriptorName])
        #expect(try rig.client.execute("start").errorText?.contains("no dirty-log-setup yet") == true)
        let memfd = makeMemfd("dirty-log")
        defer { close(memfd) }
        #expect(ftruncate(memfd, 8) == 0)
        #expect(try rig.client.execute("dirty-log-setup", ["page-size": .int(4096), "pages": .int(64)], descriptor: memfd)["return"] != nil)
        #expect(try rig.client.execute("start")["return"] != nil)
        #expect(gate.wait(timeoutSeconds: 10) == .started)
        rig.server.close()
    }

    @Test func cancelEndsTheWait() throws {
        let (rig, gate) = try Self.gated([])
        #expect(try rig.client.execute("cancel")["return"] != nil)
        #expect(gate.wait(timeoutSeconds: 10) == .cancelled)
        #expect(try rig.client.execute("start").errorText?.contains("ended") == true)
        rig.server.close()
    }

    /// A `start` after the CLI gave up is refused: it will never open anything.
    @Test func aLateStartIsRefusedAfterTheTimeout() throws {
        let (rig, gate) = try Self.gated([])
        #expect(gate.wait(timeoutSeconds: 0.05) == .timedOut)
        #expect(try rig.client.execute("start").errorText?.contains("ended") == true)
        rig.server.close()
    }

    @Test func closingTheServerEndsTheWait() throws {
        let (rig, gate) = try Self.gated(["guest-ram"])
        rig.server.close()
        #expect(gate.wait(timeoutSeconds: 10) == .serverClosed)
    }
}
