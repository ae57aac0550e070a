import Foundation
import MigrationControl
import SyncPrimitives
import Testing

@Suite struct ControlEvents {
    @Test func eventsReachTheControllerWithTimestamps() throws {
        let rig = try Rig()
        let before = Date().timeIntervalSince1970
        rig.server.emit("phase", data: ["side": .string("source"), "phase": .string("precopy")])
        let event = try rig.client.nextEvent(named: "phase")
        #expect(event["data"]?["phase"] == .string("precopy"))
        let stamp = try #require(event["timestamp"])
        let seconds = try #require(stamp["seconds"]?.intValue)
        let micros = try #require(stamp["microseconds"]?.intValue)
        #expect(abs(Double(seconds) + Double(micros) / 1e6 - before) < 5)
        #expect((0..<1_000_000).contains(micros))
        let rfc3339 = try #require(stamp["rfc3339"]?.stringValue)
        #expect(rfc3339.hasSuffix("Z") && rfc3339.count == "2026-01-01T00:00:00.000000Z".count)
        #expect(ISO8601DateFormatter().date(from: String(rfc3339.prefix(19)) + "Z") != nil)
        #expect((stamp["monotonic"]?.numberValue ?? -1) >= 0)
        // query carries the last event pushed.
        #expect(try rig.client.execute("query")["return"]?["last-event"]?["event"] == .string("phase"))
        rig.server.close()
    }

    @Test func theRFC3339FormIsUTCWithMicroseconds() {
        let stamp = EventTimestamp(epochMicroseconds: 1_780_000_000_123_456, monotonicSeconds: 2.5)
        #expect(stamp.jsonObject["rfc3339"] == .string("2026-05-28T20:26:40.123456Z"))
        #expect(stamp.jsonObject["seconds"] == .int(1_780_000_000))
        #expect(stamp.jsonObject["microseconds"] == .int(123_456))
    }

    @Test func stopGuestWaitsForGuestStopped() throws {
        let rig = try Rig()
        let answer = LockedValue<VMMAnswer?>(nil)
        let server = rig.server
        let asked = Thread {
            let got = server.ask(.stopGuest, timeoutSeconds: 10)  // not inside withLock: the test reads `answer` meanwhile
            answer.withLock { $0 = got }
        }
        asked.start()
        let event = try rig.client.nextEvent(named: "stop-guest")
        let request = try #require(event["data"]?["request"])
        #expect(answer.current == nil)
        #expect(try rig.client.execute("guest-stopped", ["request": .int(999)]).errorText?.contains("outstanding stop-guest") == true)
        #expect(try rig.client.execute("guest-stopped", ["request": request, "vcpus": .int(1)])["return"] != nil)
        for _ in 0..<500 where answer.current == nil { usleep(10_000) }
        #expect(answer.current == .answered(["vcpus": .int(1)]))
        #expect(try rig.client.execute("guest-stopped").errorText?.contains("nothing is waiting") == true)
        rig.server.close()
    }

    @Test func askingWithoutAControllerIsTodaysBehaviour() throws {
        let scratch = Scratch()
        let server = try ControlServer(.init(address: .unix(path: scratch.socketPath)), handler: RecordingHandler())
        #expect(server.ask(.stopGuest, timeoutSeconds: 1) == .noController)
        #expect(!server.notify(.startGuest))
        server.close()
        #expect(server.ask(.stopGuest, timeoutSeconds: 1) == .serverClosed)
    }

    /// `--on-stall throttle`'s request: the percent goes out in the event, `throttled` answers it.
    @Test func throttleWaitsForThrottled() throws {
        let rig = try Rig()
        let answer = LockedValue<VMMAnswer?>(nil)
        let server = rig.server
        for _ in 0..<500 where !server.hasController { usleep(10_000) }
        Thread {
            let got = server.ask(.throttle, data: ["percent": .int(20)], timeoutSeconds: 10)
            answer.withLock { $0 = got }
        }.start()
        let event = try rig.client.nextEvent(named: "throttle")
        #expect(event["data"]?["percent"] == .int(20))
        let request = try #require(event["data"]?["request"])
        #expect(try rig.client.execute("throttled", ["request": request])["return"] != nil)
        for _ in 0..<500 where answer.current == nil { usleep(10_000) }
        #expect(answer.current == .answered([:]))
        rig.server.close()
    }

    @Test func aControllerThatLeavesWithoutAnsweringEndsTheWait() throws {
        let scratch = Scratch()
        let server = try ControlServer(.init(address: .unix(path: scratch.socketPath)), handler: RecordingHandler())
        let answer = LockedValue<VMMAnswer?>(nil)
        do {
            let client = try ControlClient(path: scratch.socketPath)
            _ = try client.nextMessage()
            for _ in 0..<500 where !server.hasController { usleep(10_000) }
            Thread {
                let got = server.ask(.dirtySync, timeoutSeconds: 10)
                answer.withLock { $0 = got }
            }.start()
            _ = try client.nextEvent(named: "dirty-sync")
        }
        for _ in 0..<500 where answer.current == nil { usleep(10_000) }
        #expect(answer.current == .controllerGone)
        server.close()
    }

    @Test func anUnansweredRequestTimesOut() throws {
        let rig = try Rig()
        for _ in 0..<500 where !rig.server.hasController { usleep(10_000) }
        #expect(rig.server.ask(.resumeGuest, timeoutSeconds: 0.1) == .timedOut)
        rig.server.close()
    }
}
