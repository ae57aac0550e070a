import Foundation
import Testing
import TestSupport

/// The real binaries, two streams (`send --streams 2`, `receive --max-streams 2`),
/// through a proxy that cuts one connection after the first pre-copy pass: the extra
/// stream alone, or every connection. Both processes resume (PROTOCOL.md §14.5),
/// report `resumed`, exit 0, and memory and device state are byte-identical.
@Suite(.serialized)
struct MultiStreamProcessResumeTests {
    enum Cut: String, CaseIterable, CustomTestStringConvertible {
        case extraStream, everyConnection
        var testDescription: String { rawValue }
    }

    @Test(arguments: Cut.allCases)
    func aCutBetweenTwoProcessesResumesByteExact(cut: Cut) throws {
        let dir = try CLI.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeGuestMemoryFile("\(dir)/src.mem", pages: 1024)
        let (receiver, port) = try CLI.receiver(dir: dir, extra: ["--max-streams", "2", "--reconnect-timeout", "20",
                                                                  "--dump-state", "\(dir)/dst"])
        let proxy = try ReconnectProxy(targetPort: port)
        defer { proxy.close() }
        let sender = try CLI.sender(dir: dir, port: proxy.port,
                                    extra: ["--streams", "2", "--reconnect-timeout", "20", "--dump-state", "\(dir)/src",
                                            "--workload-ms", "0.5", "--downtime-ms", "30", "--max-iterations", "3",
                                            // ~1 s per pass, so the cut lands inside the second one
                                            "--bandwidth", "4M"])
        let hello = sender.waitForEvent { $0["event"] as? String == "hello" }
        #expect(hello?["streams"] as? Int == 2, "\(sender.stderr)")
        #expect(sender.waitForEvent { $0["event"] as? String == "iteration" } != nil, "\(sender.stderr)")
        switch cut {
        case .extraStream: proxy.cut(connection: 2)   // stream k is the proxy's connection k + 1
        case .everyConnection: proxy.cut()
        }
        #expect(sender.wait() == 0, "sender: \(sender.stderr)")
        #expect(receiver.wait() == 0, "receiver: \(receiver.stderr)")
        #expect(proxy.cuts >= 1)
        for (side, process) in [("source", sender), ("destination", receiver)] {
            #expect(process.events.contains { $0["event"] as? String == "resumed" }, "\(side) resumed: \(process.stderr)")
        }
        for name in ["gpu0", "nic0"] {
            let a = FileManager.default.contents(atPath: "\(dir)/src/\(name).state")
            #expect(a != nil && a == FileManager.default.contents(atPath: "\(dir)/dst/\(name).state"), "\(name) differs")
        }
        #expect(FileManager.default.contentsEqual(atPath: "\(dir)/src.mem", andPath: "\(dir)/dst.mem"))
    }
}
