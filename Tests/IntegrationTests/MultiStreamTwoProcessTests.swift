import Foundation
import Testing
import TestSupport

/// `send --streams` through the real binary: the receiver's listener takes the
/// extra streams' JOINs, both `hello` events say how many, and the result is
/// byte-identical (protocol version 3, docs/PROTOCOL.md §14).
@Suite(.serialized)
struct MultiStreamTwoProcessTests {
    @Test func threeStreamsBetweenTwoProcessesAreByteExact() throws {
        let dir = try TwoProcessTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeGuestMemoryFile("\(dir)/src.mem", pages: 2048)
        let devices = ["--device", "gpu0=sim:state=1M,seed=1,dirty=32,churn=4K,chunk=128K"]
        let (receiver, port) = try TwoProcessTests.startReceiver(dir: dir, ["--memory", "\(dir)/dst.mem", "--memory-size", "8M", "--create-memory",
                                                                            "--dump-state", "\(dir)/dst", "--json", "--accept-timeout", "60",
                                                                            "--max-streams", "3"] + devices)
        let sender = try TwoProcessTests.startSender(port: port, ["--memory", "\(dir)/src.mem", "--dump-state", "\(dir)/src", "--json",
                                                                  "--workload-ms", "0.5", "--downtime-ms", "30", "--max-iterations", "6",
                                                                  "--streams", "4"] + devices)
        let s = sender.wait()
        let r = receiver.wait()
        #expect(s.code == 0, "sender: \(s.err)\n\(s.out)")
        #expect(r.code == 0, "receiver: \(r.err)\n\(r.out)")
        TwoProcessTests.expectByteIdentical(dir: dir, devices: ["gpu0"])
        for (side, out) in [("source", s.out), ("destination", r.out)] {
            let hello = TwoProcessTests.events(out).first { $0["event"] as? String == "hello" }
            #expect(hello?["streams"] as? Int == 3, "\(side): the destination's --max-streams 3 caps --streams 4")
        }
    }
}
