import Foundation
import Testing

/// Issue 18's scenario as the issue ran it: the real binary as two processes on
/// 127.0.0.1, a 64 MiB guest, one simulated device (`sim:state=4M,seed=1`, its
/// default workload: 64 pages and 16 KiB of state per 1 ms step, every guest page
/// dirtied in each pass), `--bandwidth 16M`, default compression. About 9 s per
/// switch-over (most of it the 1.8 s final round and four passes at 16 MB/s).
@Suite(.serialized)
struct StallPolicyTwoProcessTests {
    typealias T = TwoProcessTests
    /// `allevery=1`: the driver answers ALL whenever anything in the range is dirty,
    /// which is what the run saw (every page, every pass) — and stays so when
    /// a loaded CI machine (the ThreadSanitizer run) starves the workload thread.
    static let device = ["--device", "gpu0=sim:state=4M,seed=1,allevery=1"]
    static let pages = 16384

    /// Mixed pages like `writeGuestMemoryFile`, 64 MiB of them, built fast
    /// enough for a debug build: zero, a per-page pattern, and pseudo-random.
    static func makeGuest(_ path: String) throws {
        var bytes = [UInt8](repeating: 0, count: pages * 4096)
        var x: UInt64 = 0x1234_5678
        bytes.withUnsafeMutableBytes { raw in
            let words = raw.bindMemory(to: UInt64.self)
            for p in 0..<pages where p % 4 != 0 {
                for w in (p * 512)..<((p + 1) * 512) {
                    if p % 4 == 1 { words[w] = UInt64(truncatingIfNeeded: p &* 0x0101_0101_0101_0101 &+ (w & 31)) }
                    else { x = x &* 6364136223846793005 &+ 1442695040888963407; words[w] = x }
                }
            }
        }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    struct Outcome {
        var sender: (code: Int32, out: String, err: String)
        var receiver: (code: Int32, out: String, err: String)
        var byteExact: Bool
        func event(_ name: String) -> [String: Any]? { T.events(sender.out).last { $0["event"] as? String == name } }
    }

    static func run(onStall: String) throws -> Outcome {
        let dir = try T.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try makeGuest("\(dir)/src.mem")
        let (receiver, port) = try T.startReceiver(dir: dir, ["--memory", "\(dir)/dst.mem", "--memory-size", "64M", "--create-memory",
                                                              "--dump-state", "\(dir)/dst", "--json", "--accept-timeout", "60"] + device)
        let sender = try T.startSender(port: port, ["--memory", "\(dir)/src.mem", "--dump-state", "\(dir)/src", "--json",
                                                    "--bandwidth", "16M", "--on-stall", onStall] + device)
        let s = sender.wait()
        let r = receiver.wait()
        let same = { (a: String, b: String) in
            FileManager.default.contents(atPath: "\(dir)/\(a)").map { $0 == FileManager.default.contents(atPath: "\(dir)/\(b)") } ?? false
        }
        return Outcome(sender: s, receiver: r, byteExact: same("src.mem", "dst.mem") && same("src/gpu0.state", "dst/gpu0.state"))
    }

    static func expectSwitchedOver(_ o: Outcome, saying: String) {
        #expect(o.sender.code == 0, "sender: \(o.sender.err)\n\(o.sender.out)")
        #expect(o.receiver.code == 0, "receiver: \(o.receiver.err)")
        #expect(o.byteExact)
        let stats = o.event("finished")?["stats"] as? [String: Any]
        #expect((stats?["iterations"] as? Int ?? 99) <= 4)
        #expect(stats?["converged"] as? Bool == false)
        #expect(stats?["downtimeComparison"] is [String: Any], "estimated vs measured downtime in the stats")
        #expect((o.event("switchover")?["reason"] as? String ?? "").contains(saying))
        #expect(o.event("iteration")?["verdict"] as? String != nil, "convergence figures in the iteration events")
    }

    @Test func switchoverEndsWithinFourIterations() throws {
        Self.expectSwitchedOver(try Self.run(onStall: "switchover"), saying: "--on-stall switchover")
    }

    @Test func throttleWithoutAControllerActsAsSwitchover() throws {
        Self.expectSwitchedOver(try Self.run(onStall: "throttle"), saying: "without a VMM controller")
    }

    @Test func rollbackExitsTwoWithTheDeviceRunningOnTheSource() throws {
        let o = try Self.run(onStall: "rollback")
        #expect(o.sender.code == 2, "sender: \(o.sender.err)\n\(o.sender.out)")
        #expect(o.receiver.code == 2, "receiver: \(o.receiver.err)")
        let failed = o.event("failed")
        #expect(failed?["phase"] as? String == "precopy")
        #expect((failed?["device_states"] as? [String: String])?["gpu0"] == "RUNNING")
        let message = failed?["message"] as? String ?? ""
        #expect(message.contains("not converging") && message.contains("estimated downtime") && message.contains("--on-stall rollback"))
        #expect(T.events(o.sender.out).filter { $0["event"] as? String == "iteration" }.count <= 4)
    }
}
