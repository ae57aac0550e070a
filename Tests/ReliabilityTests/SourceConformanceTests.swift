import Foundation
import Testing
import TestSupport
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice

/// The source's side of PROTOCOL.md: a destination written by hand from
/// docs/PROTOCOL.md sees every frame the engine's source sends.
@Suite(.serialized)
struct SourceConformanceTests {
    /// A scripted destination on 127.0.0.1 and the engine's sender connected to it.
    struct Session {
        let peer: ScriptedPeer
        let source: ResultBox<MigrationStats>
        let listener: TLSListener
        let keepAlive: StopSignal

        init(_ pair: SimPair, options: SenderOptions) throws {
            ignoreSIGPIPE()
            let pki = try TestPKI.get()
            listener = try TLSListener(endpoint: .tcp(host: "127.0.0.1", port: 0), context: try pki.serverContext())
            guard case .tcp(_, let port) = listener.boundEndpoint else { throw SetupError("no port") }
            let sender = Sender(devices: pair.source, memory: pair.sourceMemory, options: options)
            let client = try pki.clientContext()
            source = background { () throws -> MigrationStats in
                try sender.run(stream: try TLSConnector.connect(to: .tcp(host: "127.0.0.1", port: port), context: client, timeoutSeconds: 5))
            }
            peer = ScriptedPeer(stream: try listener.accept(timeoutSeconds: 20), reading: .source)
            try peer.send(.hello(pair.destinationHello(sessionID: (0..<16).map { UInt8($0) })))
            guard case .hello = try peer.nextSignificant()?.body else { throw SetupError("no source HELLO") }
            keepAlive = StopSignal()
        }

        /// Keep-alives every `seconds` from the scripted destination until stopped.
        func keepAliveEvery(_ seconds: Double) {
            let peer = self.peer, stop = keepAlive
            Thread { while !stop.wait(seconds) { try? peer.send(.keepAlive) } }.start()
        }
    }

    /// §6/§7: the source sends COMMIT only after READY and keeps the line alive while it
    /// waits; §5.5: no ITERATION_END once stop-and-copy began (DEVICE_END and COMPLETE end
    /// it); §2.4: after RESUMED the source sends close_notify at once.
    @Test func sourceWaitsForReadyKeepsAliveAndClosesAtOnce() throws {
        let pair = try SimPair(names: ["gpu0"], stateSize: 64 << 10, memoryPages: 256, maxChunk: 8 << 10)
        var options = Rig.senderOptions(peerTimeout: 3)
        options.downtimeTargetMs = 300
        let s = try Session(pair, options: options)
        defer { s.keepAlive.set(); s.peer.stream.close(); s.listener.close() }
        s.keepAliveEvery(0.4)
        while let f = try s.peer.nextSignificant() { if case .complete = f.body { break } }
        // Hold READY back for 2 s: only keep-alives may arrive meanwhile.
        let complete = s.peer.received.count
        let holdUntil = ContinuousClock.now + .seconds(2)
        s.peer.stream.readTimeoutSeconds = 0.5
        while ContinuousClock.now < holdUntil { _ = try? s.peer.next() }
        let waiting = s.peer.received[complete...].map(\.body)
        #expect(waiting.allSatisfy { if case .keepAlive = $0 { return true } else { return false } }, "before READY: \(waiting)")
        #expect(!waiting.isEmpty, "the source sent KEEPALIVE while it waited for READY")
        s.peer.stream.readTimeoutSeconds = 20
        try s.peer.send(.ready)
        guard case .commit = try s.peer.nextSignificant()?.body else { Issue.record("expected COMMIT"); return }
        try s.peer.send(.resumed)
        let end = s.peer.readUntilClosed(timeoutSeconds: 3)
        #expect(end.closedCleanly, "the source closes right after RESUMED: \(end.error ?? "")")
        s.peer.stream.close()
        let stats = try s.source.wait(timeout: 30).get()

        let bodies = s.peer.received.map(\.body)
        let iterationEnds = bodies.indices.filter { if case .iterationEnd = bodies[$0] { return true } else { return false } }
        let stopCopy = bodies.firstIndex { if case .deviceData(let d) = $0, d.phase == .stopcopy { return true } else { return false } }
        #expect(iterationEnds.count == stats.iterations, "one ITERATION_END per pre-copy iteration")
        if let stopCopy, let last = iterationEnds.last { #expect(last < stopCopy, "no ITERATION_END in stop-and-copy") }
    }

    /// a destination that stops reading and aborts is acted on at once; the
    /// source does not wait out its 60 s peer timeout on a blocked write first.
    @Test func destinationAbortWhileTheSourceIsBlockedWritingIsActedOnAtOnce() throws {
        let pair = try SimPair(names: ["gpu0"], stateSize: 64 << 10, memoryPages: 16384, maxChunk: 8 << 10)
        var options = Rig.senderOptions(peerTimeout: 60)
        options.compression = .none
        let s = try Session(pair, options: options)
        defer { s.peer.stream.close(); s.listener.close() }
        usleep(1_500_000)   // not reading: the source's socket buffers fill, its writer blocks
        let started = ContinuousClock.now
        try s.peer.send(.abort(Abort(reason: .deviceError, message: "destination: gpu0 rejected a chunk")))
        let result = s.source.wait(timeout: 90)
        let took = ContinuousClock.now - started
        guard case .failure(let e as MigrationError) = result else { Issue.record("source: \(result)"); return }
        guard case .peerAborted(.deviceError, _) = e.failure else { Issue.record("source: \(e)"); return }
        #expect(e.disposition == .rolledBack)
        #expect(took < .seconds(30), "acted on after \(took), not after the 60 s peer timeout")
        Guarantee.sourceDevicesRunning(pair)
    }
}

final class StopSignal: @unchecked Sendable {
    private let c = NSCondition()
    private var stopped = false
    func set() { c.lock(); stopped = true; c.broadcast(); c.unlock() }
    /// Waits up to `seconds`; true once set.
    func wait(_ seconds: Double) -> Bool {
        c.lock(); defer { c.unlock() }
        if !stopped { _ = c.wait(until: Date(timeIntervalSinceNow: seconds)) }
        return stopped
    }
}
