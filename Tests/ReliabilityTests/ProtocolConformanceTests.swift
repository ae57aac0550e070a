import Foundation
import Testing
import TestSupport
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice

/// Where docs/PROTOCOL.md and the engine disagreed, a peer written from the
/// spec alone (`ScriptedPeer`) now gets what the spec says. One test per decided point.
@Suite(.serialized)
struct ProtocolConformanceTests {
    static func page(_ byte: UInt8) -> [UInt8] { [UInt8](repeating: byte, count: 4096) }

    /// §5.1: the source's memory ranges lie inside the destination's: as two adjacent
    /// ranges covering it, or as half of it. §2.4: after RESUMED the destination sends
    /// close_notify at once, without waiting for the source to close first.
    @Test(arguments: ["adjacent ranges", "half the memory"])
    func sourceMemoryInsideTheDestinationsMigrates(_ layout: String) throws {
        let pair = try SimPair(names: ["gpu0"], stateSize: 32 << 10, memoryPages: 256, maxChunk: 8 << 10)
        var session = try ScriptedSession(pair)
        defer { session.close() }
        let (receiver, peer) = (session.receiver, session.peer)
        session.hello.memory = layout == "adjacent ranges"
            ? [MemoryRange(startPFN: 0, pageCount: 100, pageSize: 4096), MemoryRange(startPFN: 100, pageCount: 156, pageSize: 4096)]
            : [MemoryRange(startPFN: 0, pageCount: 128, pageSize: 4096)]
        try peer.send(.hello(session.hello))
        let last: UInt64 = layout == "adjacent ranges" ? 200 : 127
        try peer.send(.pages(Pages(pageSize: 4096, segments: [
            PageSegment(startPFN: 10, pageCount: 1, encoding: .raw, payload: Self.page(0xA1)),
            PageSegment(startPFN: last, pageCount: 1, encoding: .raw, payload: Self.page(0xB2))])))
        try peer.sendDeviceStreams(pair)
        try peer.send(.complete)
        try peer.commitAfterReady()
        // We have not closed: the destination's close_notify must come by itself, at once
        // (it used to wait 5 s for ours). 3 s is a generous bound, not a speed figure.
        let end = peer.readUntilClosed(timeoutSeconds: 3)
        #expect(end.closedCleanly, "the destination closes right after RESUMED: \(end.error ?? "")")
        try? peer.stream.shutdown()
        guard case .success = receiver.result.wait(timeout: 60) else { Issue.record("receiver: \(receiver.result.wait())"); return }
        #expect(try pair.destinationMemory.readPages(startPFN: 10, count: 1) == Self.page(0xA1))
        #expect(try pair.destinationMemory.readPages(startPFN: last, count: 1) == Self.page(0xB2))
        #expect(try pair.destination[0].device.readState() == .running)
    }

    /// §5.1/§10: another session id or protocol version is a failed compatibility
    /// check: ABORT `incompatible`, the destination's devices untouched.
    @Test(arguments: ["session id", "version"])
    func sessionIDOrVersionMismatchIsIncompatible(_ what: String) throws {
        let pair = try SimPair(names: ["gpu0"], stateSize: 32 << 10, memoryPages: 64)
        var session = try ScriptedSession(pair)
        defer { session.close() }
        let (receiver, peer) = (session.receiver, session.peer)
        if what == "version" { session.hello.version = 2 } else { session.hello.sessionID = session.hello.sessionID.map { ~$0 } }
        try peer.send(.hello(session.hello))
        let end = peer.readUntilClosed(timeoutSeconds: 10)
        peer.stream.close()
        #expect(end.closedCleanly, "one ABORT, then close_notify: \(end.error ?? "")")
        #expect(peer.abort?.reason == .incompatible, "ABORT: \(String(describing: peer.abort))")
        #expect(peer.abort?.message.contains(what == "version" ? "version" : "session id") ?? false, "\(String(describing: peer.abort))")
        guard let e = receiver.error, case .incompatible = e.failure else { Issue.record("receiver: \(receiver.result.wait())"); return }
        #expect(e.disposition == .notStarted)
        #expect(pair.destinationRegions[0].stateWrites.isEmpty)
    }

    /// §5.6: a digest mismatch is found when DEVICE_END is applied, after every earlier
    /// frame and before any later one is applied. §6: a COMMIT that arrives before READY
    /// is never acted on before the state is verified: here it never is.
    @Test func digestMismatchStopsBeforeLaterFramesAndAnEarlyCommitResumesNothing() throws {
        let pair = try SimPair(names: ["gpu0"], stateSize: 32 << 10, memoryPages: 64, maxChunk: 8 << 10)
        let session = try ScriptedSession(pair)
        defer { session.close() }
        let (receiver, peer) = (session.receiver, session.peer)
        try peer.send(.hello(session.hello))
        try peer.sendDeviceStreams(pair, corruptDigestOf: 0)
        try peer.send(.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 7, pageCount: 1, encoding: .raw, payload: Self.page(0xCD))])))
        try peer.send(.complete)
        try peer.send(.commit)   // not waiting for READY, against §6
        _ = peer.readUntilClosed(timeoutSeconds: 10)
        peer.stream.close()
        #expect(peer.abort?.reason == .digestMismatch, "\(String(describing: peer.abort))")
        #expect(!peer.received.contains { if case .ready = $0.body { return true } else { return false } })
        #expect(try pair.destinationMemory.readPages(startPFN: 7, count: 1).allSatisfy { $0 == 0 }, "the PAGES after DEVICE_END were not applied")
        Guarantee.destinationNeverRan(pair)
        guard let e = receiver.error, case .digestMismatch = e.failure else { Issue.record("receiver: \(receiver.result.wait())"); return }
    }

    /// §5.7: an ABORT is answered with close_notify, never with an ABORT.
    @Test func abortIsNotAnsweredWithAnAbort() throws {
        let pair = try SimPair(names: ["gpu0"], stateSize: 32 << 10, memoryPages: 64)
        let session = try ScriptedSession(pair)
        defer { session.close() }
        let (receiver, peer) = (session.receiver, session.peer)
        try peer.send(.hello(session.hello))
        try peer.send(.abort(Abort(reason: .cancelled, message: "operator pressed ^C")))
        let end = peer.readUntilClosed(timeoutSeconds: 10)
        peer.stream.close()
        #expect(end.closedCleanly, "\(end.error ?? "")")
        #expect(peer.abort == nil, "the destination answered an ABORT with \(String(describing: peer.abort))")
        guard let e = receiver.error, case .peerAborted(.cancelled, _) = e.failure else { Issue.record("receiver: \(receiver.result.wait())"); return }
        Guarantee.destinationNeverRan(pair)
    }

    /// §5.7/§7: a silent source gets ABORT `timeout` (not `internalError`), and the
    /// destination kept sending KEEPALIVE while it waited.
    @Test func silentSourceIsAbortedWithTimeout() throws {
        let pair = try SimPair(names: ["gpu0"], stateSize: 32 << 10, memoryPages: 64)
        let session = try ScriptedSession(pair, options: Rig.receiverOptions(peerTimeout: 1.5))
        defer { session.close() }
        let (receiver, peer) = (session.receiver, session.peer)
        try peer.send(.hello(session.hello))
        let end = peer.readUntilClosed(timeoutSeconds: 20)
        peer.stream.close()
        #expect(peer.abort?.reason == .timeout, "\(String(describing: peer.abort)) \(end.error ?? "")")
        #expect(end.frames.contains { if case .keepAlive = $0.body { return true } else { return false } }, "keep-alives while waiting")
        guard let e = receiver.error, case .tls(.readTimeout) = e.failure else { Issue.record("receiver: \(receiver.result.wait())"); return }
    }
}

/// A receiver listening on `pair`'s destination and a scripted source connected
/// to it that has read the destination's HELLO; `hello` is that HELLO with the
/// source's role, which a test sends back (changed or not) as its own.
struct ScriptedSession {
    let receiver: ListeningReceiver
    let peer: ScriptedPeer
    var hello: Hello

    /// `version` above 1: negotiated with ALPN, the receiver selecting what `options` speak.
    init(_ pair: SimPair, options: ReceiverOptions = Rig.receiverOptions(peerTimeout: 20), version: ProtocolVersion = .v1) throws {
        ignoreSIGPIPE()
        let pki = try TestPKI.get()
        let receiver = try ListeningReceiver(pair, pki: pki, options: options, alpn: version > .v1)
        do {
            peer = try ScriptedPeer.source(port: receiver.port, pki: pki, version: version)
            do { hello = try peer.readHello() } catch { peer.stream.close(); throw error }
        } catch {
            receiver.listener.close()
            throw error
        }
        self.receiver = receiver
        hello.role = .source
    }

    func close() {
        peer.stream.close()
        receiver.listener.close()
    }
}
