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

/// One KVM guest at a time: on this nested host two guests running at once
/// slowed each other down a thousandfold (a 30-page run took 40 s).
@Suite(.serialized) enum KVMGuestSuites {}

extension KVMGuestSuites {
    /// Issue 15, "prove it with a real guest": a real KVM guest (one vCPU, real-mode
    /// code sweeping a counter over its memory) keeps running while `vfio-migrate
    /// send` migrates its memory, handed over as a memfd (`--memory fd:3`), with the
    /// test VMM on the control socket (`--control fd:4`, a socketpair; the bitmap
    /// handed over, then `start`) answering `dirty-sync` from KVM_GET_DIRTY_LOG
    /// and `stop-guest` by pausing the vCPU.
    /// The destination must end with the guest's memory as it was when it stopped;
    /// its VMM (same descriptors on `receive`) runs the guest there on `start-guest`.
    @Suite struct KVMGuestMigrationTests {
        static let memorySize = "256K"
        static let memoryBytes = 256 << 10
        /// The device's own dirty pages are not asked for (`--dirty vmm`), so it writes none.
        static let device = ["--device", "gpu0=sim:state=64K,seed=7,dirty=0,churn=1K,chunk=16K"]
        /// A downtime target no estimate meets: while the guest dirties pages, pre-copy
        /// goes on until it stalls (3 rounds) or the limit, so there are several dirty rounds.
        static let precopy = ["--downtime-ms", "0.001", "--max-iterations", "4"]

        struct Run {
            var source: VMMRecord
            var destination: DestinationRecord
            var sourceExit: Int32
            var destinationExit: Int32
            var sourceMemoryAfter: [UInt8]
            var log: String
        }

        /// With KVM, and with the writer thread that stands in for it where there is none.
        @Test(arguments: [true, false])
        func theDestinationHoldsTheGuestAsItStopped(useKVM: Bool) throws {
            let run = try Self.migrate(reporting: .harvested, useKVM: useKVM)
            #expect(run.sourceExit == 0 && run.destinationExit == 0, "\(run.log)")
            #expect(run.source.session.outcome == .finished, "\(run.log)")
            #expect(run.source.session.refused.isEmpty && run.source.guestFailure == nil, "\(run.log)")
            let nonEmpty = run.source.harvestedPagesPerSync.filter { $0 > 0 }
            #expect(nonEmpty.count > 1, "several dirty rounds carried guest writes: \(run.source.harvestedPagesPerSync)")
            // The last round is read after the guest stopped: its final writes go too.
            let events = run.source.session.events
            let stop = try #require(events.firstIndex(of: "stop-guest"), "\(run.log)")
            #expect(events[stop...].contains("dirty-sync"), "\(events)")
            let snapshot = try #require(run.source.snapshotAtStop, "stop-guest was asked: \(events)")
            #expect(differingPages(run.sourceMemoryAfter, snapshot) == [], "the guest stayed paused after guest-stopped")
            let migrated = try #require(run.destination.memoryAtStart, "start-guest arrived: \(run.log)")
            #expect(differingPages(migrated, snapshot) == [], "\(run.log)")
            try Self.expectTheGuestRanOnTheDestination(run, from: snapshot)
        }

        /// `start-guest` came after COMMIT, and the guest the destination's VMM
        /// started over the migrated memory went on from the stopped sweep counter.
        static func expectTheGuestRanOnTheDestination(_ run: Run, from snapshot: [UInt8]) throws {
            let events = run.destination.session.events
            // The destination enters `resume` once COMMIT has arrived.
            let committed = try #require(events.firstIndex(of: "phase:resume"), "\(events)")
            let start = try #require(events.firstIndex(of: "start-guest"), "\(events)")
            #expect(committed < start, "\(events)")
            #expect(run.destination.guestFailure == nil, "\(run.destination.guestFailure ?? "")")
            let after = try #require(run.destination.memoryAfterOneSweep)
            print("TestVMM destination mode: \(run.destination.mode.map { "\($0)" } ?? "none")")
            var expected = snapshot
            let next = CounterSweepProgram.counter(in: snapshot) + 1
            expected[CounterSweepProgram.counterOffset] = UInt8(next & 0xFF)
            expected[CounterSweepProgram.counterOffset + 1] = UInt8(next >> 8)
            for page in CounterSweepProgram.firstDataPage..<(memoryBytes / 4096) {
                expected.replaceSubrange((page * 4096)..<((page + 1) * 4096), with: CounterSweepProgram.page(page, afterSweep: next))
            }
            #expect(differingPages(after, expected) == [], "sweep \(next) on the destination, mode \(String(describing: run.destination.mode))")
        }

        /// The negative control: the same run, the VMM answering every `dirty-sync`
        /// with an empty bitmap. The guest's later writes are never re-sent, so the
        /// destination is stale: the dirty log is what made the run above right.
        /// (With nothing reported dirty, pre-copy may end after one dirty round.)
        @Test func anEmptyDirtyLogLeavesTheDestinationStale() throws {
            let run = try Self.migrate(reporting: .empty)
            #expect(run.sourceExit == 0 && run.destinationExit == 0, "\(run.log)")
            #expect(run.source.harvestedPagesPerSync.first ?? 0 > 0, "the guest wrote during pre-copy: \(run.source.harvestedPagesPerSync)")
            let snapshot = try #require(run.source.snapshotAtStop, "stop-guest was asked: \(run.log)")
            let migrated = try #require(run.destination.memoryAtStart, "start-guest arrived: \(run.log)")
            let stale = differingPages(migrated, snapshot)
            print("empty dirty log: \(stale.count) stale pages of \(Self.memoryBytes / 4096)")
            #expect(!stale.isEmpty, "\(run.log)")
        }

        /// The receiver with the destination VMM's memfd and socket, the source VMM's
        /// guest running, then the sender with its memfd and socket, each on fd 3 and 4.
        /// The source VMM is served to the end first; the destination's events wait in its socket.
        static func migrate(reporting: TestVMM.DirtyReporting, useKVM: Bool = true) throws -> Run {
            let dir = NSTemporaryDirectory() + "vfio-migrate-vmm-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let sourceVMM = try TestVMM(memoryBytes: memoryBytes, reporting: reporting, useKVM: useKVM)
            let destinationVMM = try DestinationVMM(memoryBytes: memoryBytes, useKVM: useKVM)
            print("TestVMM mode: \(sourceVMM.guest.mode)")
            let vmmOptions = ["--memory", "fd:3", "--memory-size", memorySize, "--control", "fd:4", "--guest-handshake"]
            let receiver = try InheritingChild(binary, ["receive", "--listen", "127.0.0.1:0", "--port-file", "\(dir)/port", "--accept-timeout", "60"]
                                               + vmmOptions + common + tls("destination", "source"),
                                               inherit: [3: destinationVMM.memory.fd, 4: destinationVMM.childControlDescriptor], outputPrefix: "\(dir)/receive")
            destinationVMM.childStarted()
            let port = try waitForPort("\(dir)/port", receiver)
            try sourceVMM.handOverDirtyLogAndStart()
            let sender = try InheritingChild(binary, ["send", "--connect", "127.0.0.1:\(port)", "--await-start", "--dirty", "vmm"] + precopy
                                             + vmmOptions + common + tls("source", "destination"),
                                             inherit: [3: sourceVMM.memory.fd, 4: sourceVMM.childControlDescriptor], outputPrefix: "\(dir)/send")
            sourceVMM.childStarted()
            let source = try sourceVMM.serve(timeoutSeconds: 60)
            let destination = try destinationVMM.serve(timeoutSeconds: 30)
            let sourceExit = sender.wait(timeout: 30), destinationExit = receiver.wait(timeout: 30)
            print("TestVMM: \(source.harvestedPagesPerSync.count) dirty-syncs harvesting \(source.harvestedPagesPerSync) pages; "
                  + "\(source.pagesWrittenAtStop ?? 0) pages written by the guest when it stopped")
            let log = "source events \(source.session.events) \(String(describing: source.session.outcome)); destination events "
                + "\(destination.session.events); send: \(sender.stderr) receive: \(receiver.stderr)"
            return Run(source: source, destination: destination, sourceExit: sourceExit, destinationExit: destinationExit,
                       sourceMemoryAfter: sourceVMM.memory.snapshot(), log: log)
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
}
