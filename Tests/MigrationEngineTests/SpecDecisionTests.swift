import Foundation
import Testing
@testable import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice
import VFIOSimulator

/// Decisions of docs/PROTOCOL.md that the whole engine pins.
@Suite(.serialized)
struct SpecDecisionTests {
    /// §5.1: `raw` may be missing from the destination's list and is still permitted.
    @Test func rawIsPermittedWhenTheDestinationDoesNotListIt() throws {
        let pair = try SimPair(memoryPages: 256)
        var options = Loopback.quickOptions()
        options.compression = .none          // the source uses raw only
        var receiver = Loopback.quickReceiver()
        receiver.encodings = [.deflate]      // and the destination lists only deflate
        let outcome = try Loopback.migrate(source: pair.source, sourceMemory: pair.sourceMemory,
                                           destination: pair.destination, destinationMemory: pair.destinationMemory,
                                           options: options, receiverOptions: receiver)
        _ = try outcome.source.get()
        _ = try outcome.destination.get()
        #expect(pair.sourceSims[0].stateSnapshot() == pair.destinationSims[0].stateSnapshot())
    }

    /// §5.1: a source with less memory than the destination migrates; pages beyond the
    /// source's ranges are left alone.
    @Test func sourceWithLessMemoryThanTheDestinationMigrates() throws {
        let pair = try SimPair(memoryPages: 512, destinationMemoryPages: 1024)
        let outcome = try Loopback.migrate(source: pair.source, sourceMemory: pair.sourceMemory,
                                           destination: pair.destination, destinationMemory: pair.destinationMemory)
        _ = try outcome.source.get()
        _ = try outcome.destination.get()
        #expect(try pair.sourceMemory.readPages(startPFN: 0, count: 512) == pair.destinationMemory.readPages(startPFN: 0, count: 512))
    }

    /// §5.2: a chunk larger than the destination device accepts is a device error,
    /// reported before COMMIT (ABORT deviceError naming the device); the source rolls back.
    @Test func chunkLargerThanTheDestinationAcceptsFailsBeforeCommit() throws {
        let memory = try GuestMemory(anonymousNamed: "src", size: 64 * 4096, pageSize: 4096)
        let destinationMemory = try GuestMemory(anonymousNamed: "dst", size: 64 * 4096, pageSize: 4096)
        let big = SimulatedDevice(configuration: .init(stateSize: 256 << 10, seed: 1, dirtyPagesPerStep: 0, maxChunkSize: 64 << 10), guestMemory: memory)
        let small = SimulatedDevice(configuration: .init(stateSize: 256 << 10, seed: 1, dirtyPagesPerStep: 0, maxChunkSize: 4 << 10), guestMemory: destinationMemory)
        let source = MigrationDevice(name: "gpu0", region: big)
        let outcome = try Loopback.migrate(
            source: [SourceDevice(device: source, dirtyPages: RegionDirtyPageSource(device: source), compatibility: "same")],
            sourceMemory: memory,
            destination: [DestinationDevice(device: MigrationDevice(name: "gpu0", region: small), compatibility: "same")],
            destinationMemory: destinationMemory)
        guard case .failure(let d as MigrationError) = outcome.destination else { Issue.record("destination: \(outcome.destination)"); return }
        #expect(d.device == "gpu0" && d.disposition == .rolledBack, "\(d)")
        guard case .failure(let s as MigrationError) = outcome.source, case .peerAborted(.deviceError, let why) = s.failure else {
            Issue.record("source: \(outcome.source)"); return
        }
        #expect(why.contains("gpu0"), "\(why)")
        #expect(s.disposition == .rolledBack)
        #expect(big.currentState == .running)
        #expect(!small.currentState.contains(.running))
    }

    /// §5.7: the ABORT reason for each way a session can end badly.
    @Test func everyFailureMapsToTheAbortReasonTheSpecNames() {
        #expect(MigrationFailure.tls(.readTimeout(seconds: 30)).abortReason == .timeout)
        #expect(MigrationFailure.tls(.writeTimeout(seconds: 30)).abortReason == .timeout)
        #expect(MigrationFailure.timeout("no READY").abortReason == .timeout)
        #expect(MigrationFailure.peerClosed.abortReason == .protocolError)
        #expect(MigrationFailure.tls(.truncated).abortReason == .protocolError)
        #expect(MigrationFailure.peerAborted(.cancelled, "").isPeerAbort, "never answered")
        guard case .incompatible = MigrationFailure(WireError.unsupportedVersion(2, supported: 1)) else {
            Issue.record("another version is incompatible"); return
        }
        #expect(MigrationFailure(WireError.unsupportedVersion(2, supported: 1)).abortReason == .incompatible)
    }

    /// §7: both ends share one keep-alive policy; no side is silent for more than 5 s,
    /// and a tight peer timeout still sees several keep-alives before it fires.
    @Test func keepAliveIntervalMatchesTheSpec() {
        for timeout in [1.0, 3, 10, 30, 300] {
            let idle = KeepAlivePolicy.idleSeconds(peerTimeoutSeconds: timeout)
            let worst = idle + KeepAlivePolicy.checkSeconds(peerTimeoutSeconds: timeout)
            #expect(worst <= KeepAlivePolicy.maxSilenceSeconds && KeepAlivePolicy.maxSilenceSeconds == 5)
            #expect(worst * 4 <= timeout, "peer timeout \(timeout) s: silence up to \(worst) s")
        }
    }
}
