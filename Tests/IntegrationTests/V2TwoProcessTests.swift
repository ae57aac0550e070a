import Foundation
import Testing
import TestSupport

/// The v2 interface through the real binary, two processes: simulated v2 devices
/// (two with PRE_COPY, one without), a workload, DMA logging as the dirty source.
@Suite(.serialized)
struct V2TwoProcessTests {
    @Test func v2DevicesMigrateByteExactBetweenTwoProcesses() throws {
        let dir = try TwoProcessTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeGuestMemoryFile("\(dir)/src.mem", pages: 2048)
        let devices = ["--device", "gpu0=sim:interface=v2,state=1M,seed=1,dirty=24,churn=8K,chunk=128K",
                       "--device", "nic0=sim:interface=v2,state=256K,seed=2,dirty=8,churn=2K,chunk=32K,precopyend=zero",
                       "--device", "ssd0=sim:interface=v2,state=128K,seed=3,dirty=4,churn=1K,precopy=0"]
        let (receiver, port) = try TwoProcessTests.startReceiver(dir: dir, [
            "--memory", "\(dir)/dst.mem", "--memory-size", "8M", "--create-memory",
            "--dump-state", "\(dir)/dst", "--json", "--accept-timeout", "60", "--dirty", "device-log"] + devices)
        let sender = try TwoProcessTests.startSender(port: port, [
            "--memory", "\(dir)/src.mem", "--dump-state", "\(dir)/src", "--json", "--workload-ms", "0.5",
            "--downtime-ms", "30", "--max-iterations", "10", "--dirty", "device-log"] + devices)
        let s = sender.wait()
        let r = receiver.wait()
        #expect(s.code == 0, "sender: \(s.err)\n\(s.out)")
        #expect(r.code == 0, "receiver: \(r.err)\n\(r.out)")
        TwoProcessTests.expectByteIdentical(dir: dir, devices: ["gpu0", "nic0", "ssd0"])
        let finished = TwoProcessTests.events(s.out).first { $0["event"] as? String == "finished" }
        let stats = finished?["stats"] as? [String: Any]
        #expect((stats?["iterations"] as? Int ?? 0) > 1)
        #expect((stats?["bitmapsPartial"] as? Int ?? 0) + (stats?["bitmapsAll"] as? Int ?? 0) > 0, "DMA logging reported dirty pages")
    }

    @Test func v1AgainstV2IsRefusedInHello() throws {
        let dir = try TwoProcessTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeGuestMemoryFile("\(dir)/src.mem", pages: 256)
        let (receiver, port) = try TwoProcessTests.startReceiver(dir: dir, [
            "--memory", "\(dir)/dst.mem", "--memory-size", "1M", "--create-memory",
            "--device", "gpu0=sim:state=1M,compat=same", "--json", "--accept-timeout", "30"])
        let sender = try TwoProcessTests.startSender(port: port, [
            "--memory", "\(dir)/src.mem", "--device", "gpu0=sim:interface=v2,state=1M,compat=same", "--dirty", "device-log", "--json"])
        let s = sender.wait()
        let r = receiver.wait()
        #expect(s.code == 1 && r.code == 1, "sender: \(s.err)\n\(s.out)\nreceiver: \(r.err)")
        let failed = TwoProcessTests.events(s.out).first { $0["event"] as? String == "failed" }
        #expect((failed?["cause"] as? String ?? "").contains("vfio-v2[STOP_COPY|P2P|PRE_COPY];same"))
        #expect(failed?["phase"] as? String == "hello")
    }
}
