import Foundation
import TestSupport
import Testing
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice

/// Hostile peers against a listening receiver. Each is refused with
/// a clear error, the receiver's devices are never RUNNING, nothing from a refused
/// frame is applied, and the same listener and devices then accept a good source.
@Suite(.serialized)
struct HostilePeerTests {
    @Test(arguments: HostilePeer.allCases)
    func hostilePeerIsRefusedAndTheNextGoodSourceMigrates(_ peer: HostilePeer) throws {
        ignoreSIGPIPE()
        let pki = try TestPKI.get()
        let pair = try SimPair(names: ["gpu0"], stateSize: 64 << 10, memoryPages: 256, maxChunk: 8 << 10)
        let listener = try TLSListener(endpoint: .tcp(host: "127.0.0.1", port: 0), context: try pki.serverContext())
        defer { listener.close() }
        guard case .tcp(_, let port) = listener.boundEndpoint else { return }
        let receiver = Receiver(devices: pair.destination, memory: pair.destinationMemory, options: Rig.receiverOptions(peerTimeout: 10))

        // 1. The hostile peer.
        let session = background { () throws -> MigrationStats in
            let stream = try listener.accept(timeoutSeconds: 20)
            return try receiver.run(stream: stream)
        }
        let started = ContinuousClock.now
        let report = peer.attack(port: port, pki: pki)
        let result = session.wait(timeout: 60)
        #expect((ContinuousClock.now - started).seconds < 20, "refused promptly")
        guard case .failure(let error) = result else { Issue.record("\(peer) was accepted"); return }
        let text = "\(error)"
        #expect(text.contains(peer.expectedText), "\(peer): the error says why: \(text)")
        if peer.isHandshakeLevel {
            #expect(error is TLSError, "\(peer): refused in the handshake: \(text)")
        } else {
            guard let m = error as? MigrationError else { Issue.record("\(peer): \(text)"); return }
            #expect(text.contains("phase \(m.phase)"))
            #expect(m.disposition == (peer.touchesDevices ? .rolledBack : .notStarted), "\(text)")
            // The peer is told why, and never READY.
            #expect(report.abort != nil, "\(peer): the receiver sends ABORT: \(report.frames.map(\.body)) \(report.error ?? "")")
            #expect(report.abort?.message.contains(peer.expectedText) ?? false, "\(String(describing: report.abort))")
            #expect(!report.gotReady)
        }
        // Never RUNNING; untouched unless the source HELLO was accepted.
        Guarantee.destinationNeverRan(pair)
        if !peer.touchesDevices { #expect(pair.destinationRegions[0].stateWrites.isEmpty) }
        // Nothing from a refused frame was applied.
        #expect(pair.destinationRegions[0].dataWrites == (peer == .digestMismatch ? 1 : 0),
                "device data written: \(pair.destinationRegions[0].dataWrites)")
        if peer == .pfnOutsideMemory {
            #expect(try pair.destinationMemory.readPages(startPFN: pair.destinationMemory.pageCount - 1, count: 1).allSatisfy { $0 == 0 },
                    "the in-range page of the refused PAGES frame was not written")
        }

        // 2. The same listener, receiver and devices accept the next good source.
        pair.destinationRegions[0].resetLog()
        let good = background { () throws -> MigrationStats in
            let stream = try listener.accept(timeoutSeconds: 20)
            return try receiver.run(stream: stream)
        }
        let sender = Sender(devices: pair.source, memory: pair.sourceMemory, options: Rig.senderOptions(peerTimeout: 10))
        let client = try pki.clientContext()
        let src = background { () throws -> MigrationStats in
            let stream = try TLSConnector.connect(to: .tcp(host: "127.0.0.1", port: port), context: client, timeoutSeconds: 5)
            return try sender.run(stream: stream)
        }
        let o = Outcome(source: src.wait(timeout: 60), destination: good.wait(timeout: 60), proxy: nil)
        try Guarantee.migrated(o, pair)
    }
}
