import Foundation
@testable import MigrationControl
import Testing

@Suite struct Framing {
    @Test func linesSplitAcrossReadsAndCRLFAreJoinedWithTheirRanges() {
        var framer = LineFramer(limit: 16)
        #expect(framer.append(Array("ab".utf8)).isEmpty)
        #expect(framer.append(Array("c\r\nde\n".utf8)) == [
            .line(Array("abc".utf8), range: 0..<5),
            .line(Array("de".utf8), range: 5..<8),
        ])
        #expect(framer.consumedOffset == 8)
    }

    @Test func anOversizedLineIsReportedOnceAndTheNextOneIsIntact() {
        var framer = LineFramer(limit: 4)
        #expect(framer.append(Array("123456".utf8)) == [.oversized])
        #expect(framer.append(Array("789".utf8)).isEmpty)
        #expect(framer.append(Array("\nok\n".utf8)) == [.line(Array("ok".utf8), range: 10..<13)])
    }

    /// The kernel glues earlier messages in front of the one that carries
    /// descriptors in a single read: the descriptor must still go to its own line.
    @Test func aDescriptorGoesToTheLineItWasSentWithEvenWhenReadsGlueMessages() throws {
        var pair: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        defer { close(pair[1]) }
        let sender = ControlClient(connected: pair[1])
        try sender.send(raw: Array("{\"execute\": \"query\"}\n".utf8))
        let memfd = makeMemfd("glued")
        defer { close(memfd) }
        try sender.send(raw: Array("{\"execute\": \"add-fd\"}\n".utf8), descriptor: memfd)

        let connection = ControlConnection(fd: pair[0], peer: PeerCredentials(pid: 0, uid: 0, gid: 0), maxLineBytes: 1024, maxOutputBytes: 1 << 20)
        var seen: [(command: String, descriptors: Int)] = []
        _ = try connection.readAvailable { line, descriptors in
            seen.append(((try? ControlRequest(line: line).command) ?? "?", descriptors.count))
            return .object([:])
        }
        #expect(seen.map(\.command) == ["query", "add-fd"])
        #expect(seen.map(\.descriptors) == [0, 1])
        connection.close()
    }

    @Test func aControllerThatDoesNotReadIsDisconnected() throws {
        let rig = try Rig { $0.maxQueuedOutputBytes = 64 * 1024 }
        let big = String(repeating: "x", count: 1000)
        for i in 0..<2000 { rig.server.emit("progress", data: ["n": .int(Int64(i)), "padding": .string(big)]) }
        for _ in 0..<500 where rig.server.hasController { usleep(10_000) }
        #expect(!rig.server.hasController)
        #expect(rig.logs.current.contains { $0.contains("does not read") })
        rig.server.close()
    }
}
