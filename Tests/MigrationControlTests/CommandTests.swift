import Foundation
import MigrationControl
import Testing

@Suite struct ControlCommands {
    @Test func queryRoundTripEchoesTheIDAndReportsTheStatus() throws {
        let rig = try Rig()
        let reply = try rig.client.execute("query", id: .string("q-1"))
        #expect(reply["id"] == .string("q-1"))
        let status = try #require(reply["return"])
        #expect(status["phase"] == .string("precopy"))
        #expect(status["iteration"] == .int(3))
        #expect(status["raw-bytes"] == .int(4096))
        #expect(status["pending-bytes"] == .int(8192))
        #expect(status["eta-seconds"] == .double(1.5))
        #expect(status["parameters"]?["bandwidth"] == .string("unlimited"))
        #expect(status["last-event"] == .null)
        rig.server.close()
    }

    @Test func setRefusesBadValuesWithoutTouchingTheHandler() throws {
        let rig = try Rig()
        let bad: [([String: JSONValue], String)] = [
            (["downtime-ms": .int(-5)], "downtime-ms"),
            (["downtime-ms": .string("fast")], "downtime-ms"),
            (["bandwidth": .int(0)], "bandwidth"),
            (["bandwidth": .string("100M")], "bandwidth"),
            (["max-iterations": .int(0)], "max-iterations"),
            (["max-iterations": .double(2.5)], "max-iterations"),
            (["max-iterations": .int(5), "downtime_ms": .int(10)], "downtime_ms"),
            ([:], "missing argument"),
        ]
        for (arguments, named) in bad {
            let reply = try rig.client.execute("set", arguments)
            #expect(reply.errorClass == "GenericError", "\(arguments)")
            #expect(reply.errorText?.contains(named) == true, "\(reply)")
        }
        #expect(rig.handler.record.current.sets.isEmpty)
        rig.server.close()
    }

    @Test func setPassesAcceptedValuesToTheHandler() throws {
        let rig = try Rig()
        let reply = try rig.client.execute("set", ["downtime-ms": .int(150), "bandwidth": .int(1 << 20), "max-iterations": .int(7)])
        #expect(reply["return"] == .object([:]))
        _ = try rig.client.execute("set", ["bandwidth": .string("unlimited")])
        #expect(rig.handler.record.current.sets == [
            ControlParameters(downtimeMs: 150, bandwidth: .bytesPerSecond(1 << 20), maxIterations: 7),
            ControlParameters(bandwidth: .unlimited),
        ])
        rig.server.close()
    }

    @Test func aRefusalByTheEngineIsTheErrorReply() throws {
        let rig = try Rig(handler: RecordingHandler(refusal: "switch-over has begun; too late to change max-iterations"))
        let reply = try rig.client.execute("set", ["max-iterations": .int(3)])
        #expect(reply.errorText == "switch-over has begun; too late to change max-iterations")
        rig.server.close()
    }

    @Test func cancelAndSwitchoverReachTheHandler() throws {
        let rig = try Rig()
        #expect(try rig.client.execute("switchover")["return"] == .object([:]))
        #expect(try rig.client.execute("cancel")["return"] == .object([:]))
        #expect(try rig.client.execute("cancel", ["now": .bool(true)]).errorText?.contains("unknown argument 'now'") == true)
        #expect(rig.handler.record.current.switchovers == 1)
        #expect(rig.handler.record.current.cancels == 1)
        rig.server.close()
    }

    @Test func badLinesGetAnErrorReplyAndTheConnectionKeepsWorking() throws {
        let rig = try Rig()
        try rig.client.send(raw: Array("{\"execute\": \"query\"\n".utf8))
        #expect(try rig.client.nextReply().errorText?.contains("not valid JSON") == true)
        try rig.client.send(raw: Array("[1, 2]\n".utf8))
        #expect(try rig.client.nextReply().errorText?.contains("expected a JSON object") == true)
        let unknown = try rig.client.execute("migrate-everything", id: .int(9))
        #expect(unknown.errorClass == "CommandNotFound")
        #expect(unknown["id"] == .int(9))
        try rig.client.send(raw: Array(repeating: UInt8(ascii: "x"), count: 70_000) + [UInt8(ascii: "\n")])
        #expect(try rig.client.nextReply().errorText?.contains("longer than 65536 bytes") == true)
        #expect(try rig.client.execute("query")["return"]?["phase"] == .string("precopy"))
        #expect(rig.handler.record.current.cancels == 0)
        rig.server.close()
    }

    @Test func anOversizedLineArrivingInPiecesIsReportedOnce() throws {
        let rig = try Rig()
        for _ in 0..<5 { try rig.client.send(raw: Array(repeating: UInt8(ascii: " "), count: 20_000)) }
        try rig.client.send(raw: Array("\n{\"execute\": \"query\", \"id\": 2}\n".utf8))
        #expect(try rig.client.nextReply().errorText?.contains("longer than") == true)
        #expect(try rig.client.nextReply()["id"] == .int(2))
        rig.server.close()
    }
}
