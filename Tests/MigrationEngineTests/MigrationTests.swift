import Foundation
import Testing
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice
import VFIOSimulator

@Suite(.serialized)
struct MigrationTests {
    @Test func twoDevicesWithRunningWorkloadArriveIdentical() throws {
        let pair = try SimPair(names: ["gpu0", "nic0"])
        let workload = Workload(pair.sourceSims)
        let outcome = try Loopback.migrate(source: pair.source, sourceMemory: pair.sourceMemory,
                                           destination: pair.destination, destinationMemory: pair.destinationMemory)
        workload.stop()
        let src = try outcome.source.get()
        let dst = try outcome.destination.get()
        #expect(src.iterations > 1, "a running workload needs more than one pre-copy iteration")
        #expect(src.devices.map(\.sha256) == dst.devices.map(\.sha256))
        for (s, d) in zip(pair.sourceSims, pair.destinationSims) {
            #expect(s.stateSnapshot() == d.stateSnapshot())
            #expect(d.currentState == .running)
            #expect(!s.currentState.contains(.running))
        }
        #expect(try pair.identicalMemory())
        #expect(src.bitmapsNone + src.bitmapsAll + src.bitmapsPartial > 0)
        #expect(src.wireBytes > 0 && src.rawBytes > 0)
    }

    @Test(arguments: ["none", "zlib:6", "auto"])
    func everyCompressionPolicyRoundTrips(_ policy: String) throws {
        let pair = try SimPair(memoryPages: 1024)
        var options = Loopback.quickOptions()
        options.compression = try CompressionPolicy(parsing: policy)
        let outcome = try Loopback.migrate(source: pair.source, sourceMemory: pair.sourceMemory,
                                           destination: pair.destination, destinationMemory: pair.destinationMemory, options: options)
        _ = try outcome.source.get()
        _ = try outcome.destination.get()
        #expect(pair.sourceSims[0].stateSnapshot() == pair.destinationSims[0].stateSnapshot())
        #expect(try pair.identicalMemory())
    }

    @Test func helloMismatchIsRefusedBeforeAnyDeviceLeavesRunning() throws {
        let pair = try SimPair(names: ["gpu0"], destinationNames: ["gpu1"])
        let outcome = try Loopback.migrate(source: pair.source, sourceMemory: pair.sourceMemory,
                                           destination: pair.destination, destinationMemory: pair.destinationMemory)
        guard case .failure(let e as MigrationError) = outcome.source else { Issue.record("source should fail"); return }
        #expect(e.phase == .hello)
        #expect(e.disposition == .notStarted)
        guard case .incompatible(let why) = e.failure else { Issue.record("expected incompatible, got \(e.failure)"); return }
        #expect(why.contains("gpu0") && why.contains("gpu1"))
        #expect(pair.sourceSims[0].currentState == .running)
        #expect(pair.sourceSims[0].stateWriteCount == 0, "the source device was never touched")
        #expect(pair.destinationSims[0].stateWriteCount == 0, "the destination device was never touched")
        guard case .failure = outcome.destination else { Issue.record("destination should fail"); return }
    }

    @Test func memorySizeMismatchIsRefused() throws {
        let pair = try SimPair(memoryPages: 1024, destinationMemoryPages: 512)
        let outcome = try Loopback.migrate(source: pair.source, sourceMemory: pair.sourceMemory,
                                           destination: pair.destination, destinationMemory: pair.destinationMemory)
        guard case .failure(let e as MigrationError) = outcome.source, case .incompatible(let why) = e.failure else {
            Issue.record("expected an incompatible refusal"); return
        }
        #expect(why.contains("guest memory"))
        #expect(pair.sourceSims[0].currentState == .running)
    }

    @Test func sourceDeviceFailureRollsBack() throws {
        let pair = try SimPair()
        pair.sourceSims[0].inject(.failTransition(to: [.saving]))
        let outcome = try Loopback.migrate(source: pair.source, sourceMemory: pair.sourceMemory,
                                           destination: pair.destination, destinationMemory: pair.destinationMemory)
        guard case .failure(let e as MigrationError) = outcome.source else { Issue.record("source should fail"); return }
        #expect(e.phase == .stopcopy)
        #expect(e.device == "gpu0")
        #expect(e.disposition == .rolledBack)
        #expect(pair.sourceSims[0].currentState == .running)
        guard case .failure(let d as MigrationError) = outcome.destination else { Issue.record("destination should fail"); return }
        #expect(d.disposition == .rolledBack)
        #expect(pair.destinationSims[0].currentState != .running)
    }

    @Test func destinationRejectingDataRollsBackBothSides() throws {
        let pair = try SimPair()
        pair.destinationSims[0].inject(.rejectResumeData(chunk: 2))
        let outcome = try Loopback.migrate(source: pair.source, sourceMemory: pair.sourceMemory,
                                           destination: pair.destination, destinationMemory: pair.destinationMemory)
        guard case .failure(let d as MigrationError) = outcome.destination else { Issue.record("destination should fail"); return }
        #expect(d.device == "gpu0")
        guard case .failure(let s as MigrationError) = outcome.source else { Issue.record("source should fail"); return }
        #expect(s.disposition == .rolledBack)
        guard case .peerAborted(let reason, _) = s.failure else { Issue.record("source should report the destination's abort, got \(s.failure)"); return }
        #expect(reason == .deviceError)
        #expect(pair.sourceSims[0].currentState == .running)
        #expect(pair.destinationSims[0].currentState != .running)
    }

    @Test func destinationResumeFailureIsAfterCommit() throws {
        let pair = try SimPair()
        pair.destinationSims[0].inject(.failTransition(to: [.running]))
        let outcome = try Loopback.migrate(source: pair.source, sourceMemory: pair.sourceMemory,
                                           destination: pair.destination, destinationMemory: pair.destinationMemory)
        guard case .failure(let d as MigrationError) = outcome.destination else { Issue.record("destination should fail"); return }
        #expect(d.disposition == .afterCommit)
        #expect(d.phase == .resume)
        guard case .failure(let s as MigrationError) = outcome.source else { Issue.record("source should fail"); return }
        #expect(s.disposition == .destinationFailed)
        // After COMMIT the source never runs the device again.
        #expect(!pair.sourceSims[0].currentState.contains(.running))
    }

    @Test func cancelBeforeCommitRollsBack() throws {
        let pair = try SimPair(memoryPages: 4096)
        let workload = Workload(pair.sourceSims, intervalMicroseconds: 100)
        var options = Loopback.quickOptions()
        options.downtimeTargetMs = 0.000001  // never converges by itself
        options.maxIterations = 1000
        options.bandwidthBytesPerSecond = 4 << 20
        let outcome = try Loopback.migrate(source: pair.source, sourceMemory: pair.sourceMemory,
                                           destination: pair.destination, destinationMemory: pair.destinationMemory,
                                           options: options, whileRunning: { sender in
            usleep(400_000)
            sender.cancel()
        })
        workload.stop()
        guard case .failure(let s as MigrationError) = outcome.source else { Issue.record("source should fail"); return }
        guard case .cancelled = s.failure else { Issue.record("expected cancelled, got \(s.failure)"); return }
        #expect(s.disposition == .rolledBack)
        #expect(pair.sourceSims[0].currentState == .running)
        guard case .failure = outcome.destination else { Issue.record("destination should fail"); return }
        #expect(pair.destinationSims[0].currentState != .running)
    }
}

/// A destination that stays alive (keep-alives) but never answers READY.
@Suite(.serialized)
struct ReadyDeadlineTests {
    @Test func sourceGivesUpWaitingForReadyAndRollsBack() throws {
        let pair = try SimPair(memoryPages: 256)
        let (server, client) = try Loopback.contexts()
        let listener = try TLSListener(endpoint: .tcp(host: "127.0.0.1", port: 0), context: server)
        defer { listener.close() }
        let stop = StopFlag()
        Thread {
            guard let stream = try? listener.accept(timeoutSeconds: 10) else { return }
            var encoder = FrameEncoder()
            let hello = Hello(sessionID: [UInt8](repeating: 7, count: 16), role: .destination, encodings: [.raw, .deflate],
                              devices: [DeviceDescriptor(name: "gpu0", pageSize: 4096, compatibility: "sim/v1 state=\(512 << 10)")],
                              memory: [MemoryRange(startPFN: 0, pageCount: 256, pageSize: 4096)])
            try? stream.write(try encoder.encode(.hello(hello)))
            stream.readTimeoutSeconds = 0.05
            while !stop.isSet {
                _ = try? stream.read(maxCount: 1 << 20)        // swallow everything, apply nothing
                try? stream.write(try encoder.encode(.keepAlive))  // but look alive
            }
            stream.close()
        }.start()
        var options = Loopback.quickOptions()
        options.readyTimeoutSeconds = 1
        let sender = Sender(devices: pair.source, memory: pair.sourceMemory, options: options)
        let stream = try TLSConnector.connect(to: listener.boundEndpoint, context: client, timeoutSeconds: 10)
        let started = ContinuousClock.now
        var failure: MigrationError?
        do { _ = try sender.run(stream: stream) } catch { failure = error }
        stop.set()
        guard let failure else { Issue.record("the source should give up"); return }
        #expect(failure.phase == .ready)
        #expect(failure.disposition == .rolledBack)
        guard case .timeout(let why) = failure.failure else { Issue.record("expected a timeout, got \(failure.failure)"); return }
        #expect(why.contains("READY"))
        #expect(ContinuousClock.now - started < .seconds(20))
        #expect(pair.sourceSims[0].currentState == .running, "rolled back after the READY deadline")
    }
}

final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    func set() { lock.lock(); value = true; lock.unlock() }
}
