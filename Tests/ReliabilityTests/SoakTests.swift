import Foundation
import TestSupport
import Testing
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice
import VFIOSimulator

/// 20 back-to-back migrations between the same two ends (same
/// listeners, receivers, devices and guest memory), alternating directions, with a
/// workload running on the source each time; every one byte-exact.
@Suite(.serialized)
struct SoakTests {
    /// One host: its devices (usable as source and destination), memory, listener, receiver.
    final class End: @unchecked Sendable {
        let name: String
        let sims: [SimulatedDevice]
        let regions: [RecordingRegion]
        let devices: [MigrationDevice]
        let memory: GuestMemory
        let listener: TLSListener
        let receiver: Receiver
        let port: UInt16

        init(name: String, memoryPages: UInt64) throws {
            self.name = name
            memory = try GuestMemory(anonymousNamed: "soak-\(name)", size: memoryPages * 4096, pageSize: 4096)
            var sims: [SimulatedDevice] = [], regions: [RecordingRegion] = [], devices: [MigrationDevice] = []
            for (i, dev) in ["gpu0", "nic0"].enumerated() {
                let config = SimulatedDevice.Configuration(stateSize: (64 << 10) * (2 - i), seed: UInt64(10 + i), dirtyPagesPerStep: 8,
                                                           stateBytesPerStep: 1024, maxChunkSize: 16 << 10)
                let sim = SimulatedDevice(configuration: config, guestMemory: memory)
                let region = RecordingRegion(sim)
                sims.append(sim); regions.append(region); devices.append(MigrationDevice(name: dev, region: region))
            }
            self.sims = sims; self.regions = regions; self.devices = devices
            listener = try TLSListener(endpoint: .tcp(host: "127.0.0.1", port: 0), context: try Rig.serverContext())
            guard case .tcp(_, let p) = listener.boundEndpoint else { throw SetupError("no port") }
            port = p
            receiver = Receiver(devices: devices.map { DestinationDevice(device: $0, compatibility: "soak") }, memory: memory,
                                options: Rig.receiverOptions(peerTimeout: 20))
        }

        var sources: [SourceDevice] {
            devices.map { SourceDevice(device: $0, dirtyPages: RegionDirtyPageSource(device: $0), compatibility: "soak") }
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func twentyMigrationsBackAndForthAreByteExact() throws {
        ignoreSIGPIPE()
        let a = try End(name: "a", memoryPages: 256)
        let b = try End(name: "b", memoryPages: 256)
        defer { a.listener.close(); b.listener.close() }
        // Initial guest content on A; B's devices begin as fresh destinations.
        for pfn in stride(from: UInt64(0), to: 256, by: 2) {
            try a.memory.writePages(startPFN: pfn, bytes: [UInt8](repeating: UInt8(truncatingIfNeeded: pfn | 1), count: 4096))
        }
        let client = try Rig.clientContext()
        var options = Rig.senderOptions(peerTimeout: 20)
        options.downtimeTargetMs = 20
        var iterations: [Int] = []
        for round in 0..<20 {
            let (src, dst) = round % 2 == 0 ? (a, b) : (b, a)
            // The VM runs on `src`: its devices are RUNNING, the destination's are not.
            for d in src.devices { #expect(try d.readState() == .running, "round \(round): \(src.name) \(d.name)") }
            for d in dst.devices { #expect(try !d.readState().contains(.running) || round == 0, "round \(round): \(dst.name) \(d.name)") }
            let workload = SoakWorkload(src.sims)
            let accepted = background { () throws -> MigrationStats in
                try dst.receiver.run(stream: try dst.listener.accept(timeoutSeconds: 20))
            }
            let sender = Sender(devices: src.sources, memory: src.memory, options: options)
            let sent = background { () throws -> MigrationStats in
                try sender.run(stream: try TLSConnector.connect(to: .tcp(host: "127.0.0.1", port: dst.port), context: client, timeoutSeconds: 5))
            }
            let s = sent.wait(timeout: 60), d = accepted.wait(timeout: 60)
            workload.stop()
            guard case .success(let stats) = s, case .success = d else {
                Issue.record("round \(round) \(src.name)→\(dst.name) failed: \(s) / \(d)"); return
            }
            iterations.append(stats.iterations)
            for i in src.sims.indices {
                #expect(src.sims[i].stateSnapshot() == dst.sims[i].stateSnapshot(), "round \(round): device \(i) differs")
                #expect(try dst.devices[i].readState() == .running)
                #expect(try src.devices[i].readState() == .stopped)
            }
            #expect(try src.memory.readPages(startPFN: 0, count: 256) == dst.memory.readPages(startPFN: 0, count: 256), "round \(round): memory differs")
        }
        #expect(iterations.contains { $0 > 1 }, "the workload made some rounds iterate: \(iterations)")
    }
}

/// Steps the source devices' workload (state churn, DMA into guest memory) until stopped.
final class SoakWorkload: @unchecked Sendable {
    private let c = NSCondition()
    private var stopped = false, done = false
    init(_ sims: [SimulatedDevice]) {
        Thread { [self] in
            while true {
                c.lock(); let s = stopped; c.unlock()
                if s { break }
                for d in sims { d.workloadStep() }
                usleep(500)
            }
            c.lock(); done = true; c.broadcast(); c.unlock()
        }.start()
    }
    func stop() { c.lock(); stopped = true; while !done { c.wait() }; c.unlock() }
}
