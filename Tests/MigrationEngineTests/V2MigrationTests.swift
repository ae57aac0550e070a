import Foundation
import Glibc
import Testing
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice
import VFIOSimulator

/// Simulated v2 devices on both sides sharing one journal, with DMA logging as the
/// dirty source: two with PRE_COPY (and P2P), one with STOP_COPY|P2P only.
struct V2SimSet {
    static let names = ["gpu0", "nic0", "ssd0"]
    static let flags: [V2MigrationFlags] = [[.stopCopy, .p2p, .preCopy], [.stopCopy, .p2p, .preCopy], [.stopCopy, .p2p]]
    var sourceSims: [SimulatedV2Device] = []
    var destinationSims: [SimulatedV2Device] = []
    var sourceMemory: GuestMemory
    var destinationMemory: GuestMemory
    var source: [SourceDevice] = []
    var destination: [DestinationDevice] = []
    var dirtySources: [DeviceDMALogDirtyPageSource] = []
    let journal = V2Journal()

    init(stateSize: Int = 96 << 10, memoryPages: UInt64 = 1024, destinationFlags: [V2MigrationFlags]? = nil) throws {
        sourceMemory = try GuestMemory(anonymousNamed: "v2src", size: memoryPages * 4096, pageSize: 4096)
        destinationMemory = try GuestMemory(anonymousNamed: "v2dst", size: memoryPages * 4096, pageSize: 4096)
        for pfn in stride(from: UInt64(0), to: memoryPages, by: 5) {
            try sourceMemory.writePages(startPFN: pfn, bytes: [UInt8](repeating: UInt8(truncatingIfNeeded: pfn &* 3 &+ 1), count: 4096))
        }
        for (i, name) in Self.names.enumerated() {
            func config(_ flags: V2MigrationFlags, seed: UInt64) -> SimulatedV2Device.Configuration {
                var c = SimulatedV2Device.Configuration(stateSize: stateSize, seed: seed, flags: flags, dirtyPagesPerStep: 8, stateBytesPerStep: 2048)
                c.maxReadBytes = 5000 + 3000 * i
                c.precopyEndReturnsZero = i == 1          // one device answers 0 like mtty, one ENOMSG
                return c
            }
            let s = SimulatedV2Device(configuration: config(Self.flags[i], seed: UInt64(i + 1)), guestMemory: sourceMemory)
            let d = SimulatedV2Device(configuration: config(destinationFlags?[i] ?? Self.flags[i], seed: UInt64(100 + i)), guestMemory: destinationMemory)
            s.record(into: journal, as: "src \(name)")
            d.record(into: journal, as: "dst \(name)")
            sourceSims.append(s); destinationSims.append(d)
            let sd = try s.migrationDevice(name: name, chunkBytes: 16 << 10)
            let dirty = DeviceDMALogDirtyPageSource(device: sd.v2!, guestBytes: memoryPages * 4096)
            dirtySources.append(dirty)
            source.append(SourceDevice(device: sd, dirtyPages: dirty, compatibility: "sim/v2 state=\(stateSize)"))
            destination.append(DestinationDevice(device: try d.migrationDevice(name: name), compatibility: "sim/v2 state=\(stateSize)"))
        }
    }

    func identicalMemory() throws -> Bool {
        try sourceMemory.readPages(startPFN: 0, count: Int(sourceMemory.pageCount))
            == destinationMemory.readPages(startPFN: 0, count: Int(destinationMemory.pageCount))
    }

    /// Every source device runs, holds no data_fd, and logs no DMA any more.
    func sourcesRolledBack() -> Bool {
        sourceSims.allSatisfy { $0.currentState == .running && $0.openDataFDs == 0 && !$0.dmaLoggingActive }
    }

    /// No destination device runs or holds a data_fd.
    func destinationsStopped() -> Bool {
        destinationSims.allSatisfy { $0.currentState != .running && $0.openDataFDs == 0 }
    }
}

/// Steps the v2 devices' workload on a thread until stopped.
final class V2Workload: @unchecked Sendable {
    private let c = NSCondition()
    private var stopped = false
    private var done = false
    init(_ sims: [SimulatedV2Device]) {
        Thread { [self] in
            while true {
                c.lock(); let s = stopped; c.unlock()
                if s { break }
                for d in sims { d.workloadStep() }
                usleep(400)
            }
            c.lock(); done = true; c.broadcast(); c.unlock()
        }.start()
    }
    func stop() { c.lock(); stopped = true; while !done { c.wait() }; c.unlock() }
}

@Suite(.serialized)
struct V2MigrationTests {
    @Test func threeV2DevicesWithWorkloadAndDMALoggingArriveByteExact() throws {
        let set = try V2SimSet()
        let workload = V2Workload(set.sourceSims)
        let outcome = try Loopback.migrate(source: set.source, sourceMemory: set.sourceMemory,
                                           destination: set.destination, destinationMemory: set.destinationMemory)
        workload.stop()
        let src = try outcome.source.get()
        let dst = try outcome.destination.get()
        #expect(src.iterations > 1)
        #expect(src.devices.map(\.sha256) == dst.devices.map(\.sha256))
        for (i, (s, d)) in zip(set.sourceSims, set.destinationSims).enumerated() {
            #expect(s.stateSnapshot() == d.stateSnapshot(), "device \(V2SimSet.names[i])")
            #expect(d.currentState == .running && s.currentState == .stop)
            #expect(s.openDataFDs == 0 && d.openDataFDs == 0)
            #expect(!s.dmaLoggingActive && s.dmaLoggingStopCount == 1)
        }
        #expect(try set.identicalMemory())
        #expect(src.bitmapsNone + src.bitmapsPartial + src.bitmapsAll > 0)
        // The device without PRE_COPY sends everything in stop-and-copy.
        #expect(src.devices[2].precopyBytes == 0 && src.devices[2].stopcopyBytes > 0)
        #expect(src.devices[0].precopyBytes > 0)
        // Every device is P2P-quiesced before any is stopped.
        let j = set.journal.entries
        let quiesce = j.indices.filter { j[$0].hasPrefix("src") && (j[$0].contains("SET MIG_DEVICE_STATE PRE_COPY_P2P") || j[$0].contains("SET MIG_DEVICE_STATE RUNNING_P2P")) }
        let stops = j.indices.filter { j[$0].hasPrefix("src") && j[$0].contains("SET MIG_DEVICE_STATE STOP_COPY") }
        #expect(quiesce.count == 3 && stops.count == 3)
        #expect((quiesce.max() ?? .max) < (stops.min() ?? 0))
        // The destination leaves RESUMING before READY: all three RESUMING→STOP before any RUNNING.
        let validated = j.indices.filter { j[$0].hasPrefix("dst") && j[$0].contains("SET MIG_DEVICE_STATE STOP [RESUMING→STOP]) = 0") }
        let running = j.indices.filter { j[$0].hasPrefix("dst") && j[$0].contains("SET MIG_DEVICE_STATE RUNNING") }
        #expect(validated.count == 3 && running.count == 3 && validated.max()! < running.min()!)
    }

    /// One small device, no workload: the calls the simulator logged, in order, are the
    /// v2 sequence of docs/DEVICE.md (printed with VFIO_V2_LOG=1 for the docs).
    @Test func oneMigrationFollowsTheV2Sequence() throws {
        let memory = try GuestMemory(anonymousNamed: "s", size: 16 * 4096, pageSize: 4096)
        let target = try GuestMemory(anonymousNamed: "d", size: 16 * 4096, pageSize: 4096)
        var c = SimulatedV2Device.Configuration(stateSize: 6000, seed: 1, flags: [.stopCopy, .p2p, .preCopy], dirtyPagesPerStep: 2, stateBytesPerStep: 100)
        c.maxReadBytes = 4096
        let src = SimulatedV2Device(configuration: c, guestMemory: memory)
        let dst = SimulatedV2Device(configuration: c, guestMemory: target)
        let journal = V2Journal()
        src.record(into: journal, as: "source")
        dst.record(into: journal, as: "destination")
        let sd = try src.migrationDevice(name: "gpu0", chunkBytes: 4096)
        let dirty = DeviceDMALogDirtyPageSource(device: sd.v2!, guestBytes: 16 * 4096)
        var options = Loopback.quickOptions()
        options.downtimeTargetMs = 10_000
        let outcome = try Loopback.migrate(source: [SourceDevice(device: sd, dirtyPages: dirty, compatibility: "sim")], sourceMemory: memory,
                                           destination: [DestinationDevice(device: try dst.migrationDevice(name: "gpu0"), compatibility: "sim")],
                                           destinationMemory: target, options: options)
        _ = try outcome.source.get()
        _ = try outcome.destination.get()
        #expect(src.stateSnapshot() == dst.stateSnapshot())
        let lines = journal.entries
        if ProcessInfo.processInfo.environment["VFIO_V2_LOG"] != nil { print(lines.joined(separator: "\n")) }
        let order = ["source: ioctl(dev \(src.deviceFD), VFIO_DEVICE_FEATURE SET MIG_DEVICE_STATE PRE_COPY",
                     "source: ioctl(dev \(src.deviceFD), VFIO_DEVICE_FEATURE SET DMA_LOGGING_START",
                     "= -1 ENOMSG", "VFIO_MIG_GET_PRECOPY_INFO) = 0", "GET DMA_LOGGING_REPORT",
                     "SET MIG_DEVICE_STATE PRE_COPY_P2P", "SET MIG_DEVICE_STATE STOP_COPY [PRE_COPY_P2P→STOP_COPY]",
                     "destination: ioctl(dev \(dst.deviceFD), VFIO_DEVICE_FEATURE SET MIG_DEVICE_STATE STOP [RESUMING→STOP]) = 0",
                     "destination: ioctl(dev \(dst.deviceFD), VFIO_DEVICE_FEATURE SET MIG_DEVICE_STATE RUNNING",
                     "source: ioctl(dev \(src.deviceFD), VFIO_DEVICE_FEATURE SET DMA_LOGGING_STOP",
                     "source: ioctl(dev \(src.deviceFD), VFIO_DEVICE_FEATURE SET MIG_DEVICE_STATE STOP [STOP_COPY→STOP]) = 0"]
        var at = 0
        for step in order {
            guard let i = lines[at...].firstIndex(where: { $0.contains(step) }) else { Issue.record("missing, in order: \(step)"); return }
            at = i
        }
        #expect(lines.contains { $0.hasPrefix("source: read(") && $0.hasSuffix(") = 0") }, "STOP_COPY read until 0")
    }

    @Test func interfaceFlagsMismatchIsRefusedInHello() throws {
        let set = try V2SimSet(destinationFlags: [[.stopCopy, .p2p, .preCopy], [.stopCopy, .p2p], [.stopCopy, .p2p]])
        let outcome = try Loopback.migrate(source: set.source, sourceMemory: set.sourceMemory,
                                           destination: set.destination, destinationMemory: set.destinationMemory)
        guard case .failure(let e as MigrationError) = outcome.source, case .incompatible(let why) = e.failure else {
            Issue.record("expected an incompatible refusal"); return
        }
        #expect(why.contains("vfio-v2[STOP_COPY|P2P|PRE_COPY];") && why.contains("vfio-v2[STOP_COPY|P2P];"))
        #expect(set.sourceSims.allSatisfy { $0.currentState == .running } && set.destinationSims.allSatisfy { $0.currentState == .running })
        #expect(set.sourceSims.allSatisfy { !$0.log.contains { $0.contains("SET") } }, "no device was touched")
    }

    /// A fault at each FSM arc (and on each data path), on one device, and what the
    /// migration must end in: docs/RELIABILITY.md §4b.
    enum Where: String, CustomStringConvertible, CaseIterable {
        case sourceRunningToPreCopy, sourcePreCopyToP2P, sourceRunningToRunningP2P, sourceP2PToStopCopy, sourceRunningP2PToStop,
             sourceStopToStopCopy, sourceRead, sourcePrecopyInfo, destinationStopToResuming, destinationWrite,
             destinationResumingToStop, corruptStream, destinationStopToRunningP2P
        var description: String { rawValue }
    }

    @Test(arguments: Where.allCases)
    func faultAtAnArcRollsBackAsDocumented(_ fault: Where) throws {
        let set = try V2SimSet(stateSize: 48 << 10, memoryPages: 256)
        let (src, dst) = (set.sourceSims, set.destinationSims)
        switch fault {
        case .sourceRunningToPreCopy: src[1].inject(.failArc(from: .running, to: .preCopy))
        case .sourcePreCopyToP2P: src[0].inject(.failArc(from: .preCopy, to: .preCopyP2P, errno: .ioError, landIn: .error))
        case .sourceRunningToRunningP2P: src[2].inject(.failArc(from: .running, to: .runningP2P))
        case .sourceP2PToStopCopy: src[1].inject(.failArc(from: .preCopyP2P, to: .stopCopy))
        case .sourceRunningP2PToStop: src[2].inject(.failArc(from: .runningP2P, to: .stop))
        case .sourceStopToStopCopy: src[2].inject(.failArc(from: .stop, to: .stopCopy))
        case .sourceRead: src[0].inject(.failRead(afterBytes: 20_000))
        case .sourcePrecopyInfo: src[1].inject(.failPrecopyInfo)
        case .destinationStopToResuming: dst[2].inject(.failArc(from: .stop, to: .resuming))
        case .destinationWrite: dst[0].inject(.failWrite(afterBytes: 10_000))
        case .destinationResumingToStop: dst[1].inject(.failArc(from: .resuming, to: .stop, errno: .invalidArgument))
        case .corruptStream: src[0].inject(.corruptStream(atByte: 30_000))
        case .destinationStopToRunningP2P: dst[1].inject(.failArc(from: .stop, to: .runningP2P))
        }
        let outcome = try Loopback.migrate(source: set.source, sourceMemory: set.sourceMemory,
                                           destination: set.destination, destinationMemory: set.destinationMemory)
        guard case .failure(let s as MigrationError) = outcome.source, case .failure(let d as MigrationError) = outcome.destination else {
            Issue.record("both ends must fail"); return
        }
        if ProcessInfo.processInfo.environment["VFIO_V2_LOG"] != nil {
            print("FAULT \(fault): source \(s.phase)/\(s.device ?? "-")/\(s.disposition) — destination \(d.phase)/\(d.device ?? "-")/\(d.disposition): \(d.failure)")
        }
        if fault == .destinationStopToRunningP2P {
            // After COMMIT: the destination's RUNNING failed; the source never runs again.
            #expect(s.disposition == .destinationFailed && d.disposition == .afterCommit && d.phase == .resume)
            #expect(src.allSatisfy { $0.currentState == .stopCopy }, "\(src.map(\.currentState))")
            #expect(dst[1].currentState != .running)
            return
        }
        // A device that fell into ERROR is reset to run again: its state is lost, which
        // the operator must hear (exit 4), though the VM runs.
        #expect(s.disposition == (fault == .sourcePreCopyToP2P ? .rollbackFailed : .rolledBack), "source: \(s)")
        #expect(d.disposition == .rolledBack, "destination: \(d)")
        #expect(set.sourcesRolledBack(), "every source device RUNNING, no data_fd, DMA logging stopped: \(src.map(\.currentState))")
        #expect(set.destinationsStopped(), "no destination device RUNNING: \(dst.map(\.currentState))")
        switch fault {
        case .sourcePreCopyToP2P:
            #expect(src[0].resetCount == 1, "ERROR is left by reset")
            #expect(s.rollbackFailure?.contains("VFIO_DEVICE_RESET brought it back to RUNNING") == true && s.device == "gpu0" && s.phase == .stopcopy)
        case .destinationResumingToStop, .corruptStream:
            // Refused before READY: an ABORT the source rolls back from, not an exit 3 after COMMIT.
            #expect(d.phase == .complete || d.phase == .ready || d.phase == .stopcopy, "\(d.phase)")
            guard case .peerAborted(.deviceError, let message) = s.failure else { Issue.record("\(s.failure)"); return }
            #expect(message.contains("RESUMING -> STOP"))
        default:
            break
        }
    }
}
