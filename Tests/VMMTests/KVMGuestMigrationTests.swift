import Foundation
import Glibc
import TestSupport
import Testing
import TestVMM

/// Repository root, from this file's path.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// The numbers of the 4 KiB pages where `a` and `b` differ (all of them when the sizes differ).
func differingPages(_ a: [UInt8], _ b: [UInt8]) -> [Int] {
    let pages = max(a.count, b.count) / 4096
    guard a.count == b.count else { return Array(0..<pages) }
    return (0..<pages).filter { a[($0 * 4096)..<(($0 + 1) * 4096)] != b[($0 * 4096)..<(($0 + 1) * 4096)] }
}

/// Issue 15, "prove it with a real guest": a real KVM guest (one vCPU, real-mode
/// code sweeping a counter over its memory) keeps running while `vfio-migrate
/// send` migrates its memory, handed over as a memfd (`--memory fd:3`), with the
/// test VMM on the control socket (`--control fd:4`, a socketpair) answering
/// `dirty-sync` from KVM_GET_DIRTY_LOG and `stop-guest` by pausing the vCPU.
/// The destination must end with the guest's memory as it was when it stopped.
@Suite(.serialized)
struct KVMGuestMigrationTests {
    static let memorySize = "256K"
    static let memoryBytes = 256 << 10
    /// The device's own dirty pages are not asked for (`--dirty vmm`), so it writes none.
    static let device = ["--device", "gpu0=sim:state=64K,seed=7,dirty=0,churn=1K,chunk=16K"]

    struct Run {
        var record: VMMRecord
        var sourceExit: Int32
        var destinationExit: Int32
        var destination: [UInt8]
        var sourceAfter: [UInt8]
        var log: String
    }

    /// With KVM, and with the writer thread that stands in for it where there is none.
    @Test(arguments: [true, false])
    func theDestinationHoldsTheGuestAsItStopped(useKVM: Bool) throws {
        let run = try Self.migrate(reporting: .harvested, useKVM: useKVM)
        #expect(run.sourceExit == 0 && run.destinationExit == 0, "\(run.log)")
        #expect(run.record.outcome == .finished, "\(run.log)")
        #expect(run.record.refusedAnswers.isEmpty && run.record.guestFailure == nil, "\(run.log)")
        let nonEmpty = run.record.harvestedPagesPerSync.filter { $0 > 0 }
        #expect(nonEmpty.count > 1, "several dirty rounds carried guest writes: \(run.record.harvestedPagesPerSync)")
        // The last round is read after the guest stopped: its final writes go too.
        let stop = try #require(run.record.events.firstIndex(of: "stop-guest"), "\(run.log)")
        #expect(run.record.events[stop...].contains("dirty-sync"), "\(run.record.events)")
        let snapshot = try #require(run.record.snapshotAtStop, "stop-guest was asked: \(run.record.events)")
        #expect(differingPages(run.sourceAfter, snapshot) == [], "the guest stayed paused after guest-stopped")
        #expect(differingPages(run.destination, snapshot) == [], "\(run.log)")
    }

    /// The negative control: the same run, the VMM answering every `dirty-sync`
    /// with an empty bitmap. The guest's later writes are never re-sent, so the
    /// destination is stale: the dirty log is what made the run above right.
    @Test func anEmptyDirtyLogLeavesTheDestinationStale() throws {
        let run = try Self.migrate(reporting: .empty)
        #expect(run.sourceExit == 0 && run.destinationExit == 0, "\(run.log)")
        let nonEmpty = run.record.harvestedPagesPerSync.filter { $0 > 0 }
        #expect(nonEmpty.count > 1, "the guest wrote during pre-copy: \(run.record.harvestedPagesPerSync)")
        let snapshot = try #require(run.record.snapshotAtStop, "stop-guest was asked: \(run.record.events)")
        let stale = differingPages(run.destination, snapshot)
        print("empty dirty log: \(stale.count) stale pages of \(Self.memoryBytes / 4096)")
        #expect(!stale.isEmpty, "\(run.log)")
    }

    /// Receiver on 127.0.0.1:0 (file memory), the test VMM's guest running, then
    /// the sender with the guest's memfd on fd 3 and the VMM's socket on fd 4.
    static func migrate(reporting: TestVMM.DirtyReporting, useKVM: Bool = true) throws -> Run {
        let dir = NSTemporaryDirectory() + "vfio-migrate-vmm-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let vmm = try TestVMM(memoryBytes: memoryBytes, reporting: reporting, useKVM: useKVM)
        print("TestVMM mode: \(vmm.guest.mode)")
        let receiver = try InheritingChild(binary, ["receive", "--listen", "127.0.0.1:0", "--port-file", "\(dir)/port",
                                                    "--memory", "\(dir)/dst.mem", "--memory-size", memorySize, "--create-memory",
                                                    "--accept-timeout", "60"] + common + tls("destination", "source"),
                                           outputPrefix: "\(dir)/receive")
        let port = try waitForPort("\(dir)/port", receiver)
        try vmm.handOverDirtyLog()
        let sender = try InheritingChild(binary, ["send", "--connect", "127.0.0.1:\(port)", "--memory", "fd:3", "--memory-size", memorySize,
                                                  "--control", "fd:4", "--guest-handshake", "--dirty", "vmm",
                                                  "--downtime-ms", "1", "--max-iterations", "4"] + common + tls("source", "destination"),
                                         inherit: [3: vmm.memory.fd, 4: vmm.childControlDescriptor], outputPrefix: "\(dir)/send")
        vmm.childStarted()
        let record = try vmm.serve(timeoutSeconds: 60)
        let sourceExit = sender.wait(timeout: 30), destinationExit = receiver.wait(timeout: 30)
        let destination = (try? Data(contentsOf: URL(fileURLWithPath: "\(dir)/dst.mem"))).map { [UInt8]($0) } ?? []
        print("TestVMM: \(record.harvestedPagesPerSync.count) dirty-syncs harvesting \(record.harvestedPagesPerSync) pages; "
              + "\(record.pagesWrittenAtStop ?? 0) pages written by the guest when it stopped")
        let log = "events \(record.events) outcome \(String(describing: record.outcome)); send: \(sender.stderr) receive: \(receiver.stderr)"
        return Run(record: record, sourceExit: sourceExit, destinationExit: destinationExit, destination: destination,
                   sourceAfter: vmm.memory.snapshot(), log: log)
    }

    static let common = ["--json", "--workers", "1"] + device

    static func tls(_ me: String, _ peer: String) -> [String] {
        let certs = "\(repositoryRoot)/certs/dev"
        return ["--ca", "\(certs)/ca.pem", "--cert", "\(certs)/\(me).pem", "--key", "\(certs)/\(me)-key.pem",
                "--peer-name", "\(peer).vfio-migrate.test", "--allow-dev-certs"]
    }

    /// The `vfio-migrate` SwiftPM built next to this test bundle.
    static let binary: String = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("vfio-migrate").path
    }()

    static func waitForPort(_ path: String, _ receiver: InheritingChild) throws -> UInt16 {
        for _ in 0..<800 {
            if let s = try? String(contentsOfFile: path, encoding: .utf8), let port = UInt16(s.trimmingCharacters(in: .whitespacesAndNewlines)) {
                return port
            }
            usleep(25_000)
        }
        throw SetupError("the receiver wrote no port file: \(receiver.stderr)")
    }
}
