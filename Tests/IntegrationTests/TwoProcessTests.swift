import Foundation
import Testing
import TestSupport

/// Runs the real `vfio-migrate` binary as two processes over 127.0.0.1.
@Suite(.serialized)
struct TwoProcessTests {
    struct Run {
        let process: Process
        let output: ChildOutput
        func wait() -> (code: Int32, out: String, err: String) {
            let (code, o, e) = output.wait(for: process)
            return (code, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
        }
    }

    static func start(_ args: [String], environment: [String: String] = [:]) throws -> Run {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: BuiltBinary.vfioMigrate)
        p.arguments = args
        if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let o = Pipe(), e = Pipe()
        p.standardOutput = o
        p.standardError = e
        try p.run()
        return Run(process: p, output: ChildOutput(stdout: o, stderr: e))
    }

    /// A receiver on 127.0.0.1:0 that writes its port to `dir`/port, and that port.
    static func startReceiver(dir: String, _ args: [String]) throws -> (Run, UInt16) {
        let receiver = try start(["receive", "--listen", "127.0.0.1:0", "--port-file", "\(dir)/port"] + args
                                 + DevCertificates.arguments("destination", "source"))
        let port = try PortFile.wait("\(dir)/port", while: { receiver.process.isRunning },
                                     diagnostics: { receiver.process.isRunning ? "it is still running" : receiver.wait().err })
        return (receiver, port)
    }

    /// A sender connecting to the receiver on 127.0.0.1:`port`.
    static func startSender(port: UInt16, _ args: [String]) throws -> Run {
        try start(["send", "--connect", "127.0.0.1:\(port)"] + args + DevCertificates.arguments("source", "destination"))
    }

    static func tempDir() throws -> String { try makeRunDirectory(prefix: "vfio-migrate-it") }

    /// Both ends' state dumps (`--dump-state DIR/src`, `DIR/dst`) and guest-memory
    /// files (`DIR/src.mem`, `DIR/dst.mem`) exist and are byte-identical.
    static func expectByteIdentical(dir: String, devices: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        for name in devices {
            let a = FileManager.default.contents(atPath: "\(dir)/src/\(name).state")
            let b = FileManager.default.contents(atPath: "\(dir)/dst/\(name).state")
            #expect(a != nil && a == b, "device \(name) state differs", sourceLocation: sourceLocation)
        }
        let srcMem = FileManager.default.contents(atPath: "\(dir)/src.mem")
        let dstMem = FileManager.default.contents(atPath: "\(dir)/dst.mem")
        #expect(srcMem != nil && srcMem == dstMem, "guest memory differs", sourceLocation: sourceLocation)
    }

    static func events(_ out: String) -> [[String: Any]] {
        out.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }
    }

    @Test func migrationBetweenTwoProcessesIsByteExact() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeGuestMemoryFile("\(dir)/src.mem", pages: 4096)
        let devices = ["--device", "gpu0=sim:state=2M,seed=1,dirty=48,churn=8K,chunk=256K,allevery=3",
                       "--device", "nic0=sim:state=512K,seed=2,dirty=8,churn=4K,chunk=64K"]
        let (receiver, port) = try Self.startReceiver(dir: dir, ["--memory", "\(dir)/dst.mem", "--memory-size", "16M", "--create-memory",
                                                                 "--dump-state", "\(dir)/dst", "--json", "--accept-timeout", "60"] + devices)
        let sender = try Self.startSender(port: port, ["--memory", "\(dir)/src.mem", "--dump-state", "\(dir)/src", "--json",
                                                       "--workload-ms", "0.5", "--downtime-ms", "30", "--max-iterations", "12"] + devices)
        let s = sender.wait()
        let r = receiver.wait()
        #expect(s.code == 0, "sender: \(s.err)\n\(s.out)")
        #expect(r.code == 0, "receiver: \(r.err)\n\(r.out)")
        Self.expectByteIdentical(dir: dir, devices: ["gpu0", "nic0"])

        let finished = Self.events(s.out).first { $0["event"] as? String == "finished" }
        let stats = finished?["stats"] as? [String: Any]
        #expect((stats?["iterations"] as? Int ?? 0) > 1)
        #expect((stats?["bitmapsNone"] as? Int ?? 0) > 0, "NONE answers exercised")
        #expect((stats?["bitmapsAll"] as? Int ?? 0) > 0, "ALL answers exercised")
        #expect((stats?["bitmapsPartial"] as? Int ?? 0) > 0, "partial bitmaps exercised")
    }

    @Test func helloMismatchIsRefusedByBothProcesses() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeGuestMemoryFile("\(dir)/src.mem", pages: 256)
        let (receiver, port) = try Self.startReceiver(dir: dir, ["--memory", "\(dir)/dst.mem", "--memory-size", "1M", "--create-memory",
                                                                 "--device", "gpu0=sim:state=1M", "--json", "--accept-timeout", "30"])
        let sender = try Self.startSender(port: port, ["--memory", "\(dir)/src.mem", "--device", "gpu0=sim:state=2M", "--json"])
        let s = sender.wait()
        let r = receiver.wait()
        #expect(s.code == 1, "sender: \(s.err)\n\(s.out)")
        #expect(r.code == 1, "receiver: \(r.err)\n\(r.out)")
        let failed = Self.events(s.out).first { $0["event"] as? String == "failed" }
        #expect((failed?["cause"] as? String ?? "").contains("compatibility"))
        #expect(failed?["phase"] as? String == "hello")
    }

    /// The README's first command, small: both ends in one process, verified at the end.
    @Test(arguments: ["v1", "v2"])
    func demoMigratesAndVerifies(interface: String) throws {
        let demo = try Self.start(["demo", "--memory-size", "16M", "--state-size", "1M", "--interface", interface,
                                   "--certs", DevCertificates.directory])
        let r = demo.wait()
        #expect(r.code == 0, "demo: \(r.err)\n\(r.out)")
        #expect(r.out.contains("verified: destination device state and guest memory are byte-identical"))
        #expect(r.err.contains("migration complete"))
        #expect(!r.err.contains(" info "), "no diagnostics at the default log level")
    }

    @Test func demoWithoutCertificatesSaysWhatIsMissing() throws {
        let demo = try Self.start(["demo", "--memory-size", "16M", "--certs", "/nonexistent"])
        let r = demo.wait()
        #expect(r.code == 1)
        #expect(r.err.contains("/nonexistent/ca.pem is missing"))
    }

    /// An operator's Ctrl-C on a receiver that waits for a source ends it at once.
    @Test func interruptedReceiverStopsWaiting() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (receiver, _) = try Self.startReceiver(dir: dir, ["--device", "gpu0=sim:state=64K"])
        receiver.process.interrupt()
        let r = receiver.wait()
        #expect(r.code == 130, "receiver: \(r.err)")
    }
}
