import Foundation
import Testing
import TestSupport
import MigrationEngine
import MigrationTLS
import MigrationWire

/// A version-3 source written by hand from docs/PROTOCOL.md §14 against the real
/// destination: refused JOINs change nothing, and a page sent on a stream that does
/// not own its PFN ends the session with ABORT `protocolError`, never applied.
@Suite("StreamJoinConformance", .serialized)
struct StreamJoinConformanceTests {
    /// One connection of the scripted source: its own numbering, its own decoder.
    final class Connection {
        let stream: TLSStream
        var encoder = FrameEncoder()
        init(_ stream: TLSStream) {
            self.stream = stream
            stream.readTimeoutSeconds = 15
        }
        func send(_ body: FrameBody) throws { try stream.write(encoder.encode(body, device: 0)) }
    }

    static func nextHandshake(_ stream: TLSStream, _ decoder: inout ResumeHandshakeDecoder) throws -> ResumeHandshakeDecoder.Message {
        while true {
            if let m = try decoder.next() { return m }
            let bytes = try stream.read(maxCount: 1 << 16)
            if bytes.isEmpty { throw SetupError("the destination closed during the handshake") }
            decoder.feed(bytes)
        }
    }

    /// Stream 0's frames until ABORT (keep-alives and ACKs skipped).
    static func nextFrame(_ stream: TLSStream, _ decoder: inout FrameDecoder) throws -> Frame {
        while true {
            if let m = try decoder.nextMessage() {
                if case .frame(let f) = m, f.body != .keepAlive { return f }
                continue
            }
            let bytes = try stream.read(maxCount: 1 << 16)
            if bytes.isEmpty { throw SetupError("the destination closed stream 0") }
            decoder.feed(bytes)
        }
    }

    @Test("bad JOINs are refused and change nothing; a page of stream 0's PFN on stream 1 is a protocol error")
    func refusesBadJoinsAndForeignPages() throws {
        ignoreSIGPIPE()
        let pair = try SimPair(memoryPages: 64)
        let pki = try TestPKI.get()
        var options = Rig.receiverOptions(peerTimeout: 10)
        options.maxStreams = 4
        var serverConfig = pki.serverConfig()
        serverConfig.applicationProtocols = options.applicationProtocols
        let listener = try TLSListener(endpoint: .tcp(host: "127.0.0.1", port: 0), context: TLSContext(configuration: serverConfig, role: .server))
        defer { listener.close() }
        let receiver = Receiver(devices: pair.destination, memory: pair.destinationMemory, options: options)
        let dst = background { () throws -> MigrationStats in try receiver.run(stream: try listener.accept(timeoutSeconds: 30), listener: listener) }
        var clientConfig = pki.clientConfig()
        clientConfig.applicationProtocols = ["vfio-migrate/3", "vfio-migrate/2"]
        let client = try TLSContext(configuration: clientConfig, role: .client)
        let endpoint = listener.boundEndpoint
        func connect() throws -> TLSStream { try TLSConnector.connect(to: endpoint, context: client, timeoutSeconds: 5) }

        // Stream 0: the destination's version-3 HELLO, ours with 2 streams in blocks of 1 page.
        let zero = Connection(try connect())
        #expect(zero.stream.applicationProtocol == "vfio-migrate/3")
        var fromDestination = FrameDecoder(peer: .destination, version: .v3)
        guard case .hello(let theirs) = try Self.nextFrame(zero.stream, &fromDestination).body else { Issue.record("no HELLO"); return }
        #expect(theirs.streams == StreamOffer(count: 4, blockPages: 0))
        let session = theirs.sessionID
        var mine = pair.sourceHello(sessionID: session)
        mine.version = 3
        mine.streams = StreamOffer(count: 2, blockPages: 1)
        try zero.send(.hello(mine))
        let secret = try zero.stream.exportKeyingMaterial(label: ResumeProof.secretLabel, context: session, length: 32)

        /// A new connection's JOIN of `index` with the proof of `proofIndex`; the destination's answer.
        func join(_ index: UInt32, proofIndex: UInt32? = nil) throws -> (Connection, ResumeHandshakeDecoder.Message) {
            let c = Connection(try connect())
            var handshake = ResumeHandshakeDecoder(peer: .destination, sessionID: session, version: .v3)
            guard case .resume(let greeting) = try Self.nextHandshake(c.stream, &handshake) else { throw SetupError("no RESUME greeting") }
            #expect(greeting.role == .destination)
            let binding = try c.stream.exportKeyingMaterial(label: ResumeProof.bindingLabel, context: session, length: 32)
            let proof = ResumeProof.computeJoin(secret: secret, binding: binding, sessionID: session, streamIndex: proofIndex ?? index)
            try c.stream.write(try c.encoder.encode(.join(Join(sessionID: session, streamIndex: index, proof: proof))))  // unnumbered
            return (c, try Self.nextHandshake(c.stream, &handshake))
        }
        func refusal(_ m: ResumeHandshakeDecoder.Message) -> RefusalReason? { if case .refuse(let r) = m { r.reason } else { nil } }

        #expect(refusal(try join(1, proofIndex: 2).1) == .badProof)      // a proof for another index
        #expect(refusal(try join(5).1) == .streamRefused)                 // the session has 2 streams
        let (one, accepted) = try join(1)                                  // nothing above changed the session
        #expect(accepted == .joinAccept(JoinAccept(streamIndex: 1)))
        #expect(refusal(try join(1).1) == .streamRefused)                 // already joined

        // PFN 0 is stream 0's: on stream 1 it must be refused, not applied.
        let foreign = [UInt8](repeating: 0xEE, count: 4096)
        try one.send(.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 0, pageCount: 1, encoding: .raw, payload: foreign)])))
        var abort: Abort?
        while abort == nil, let frame = try? Self.nextFrame(zero.stream, &fromDestination) {
            if case .abort(let a) = frame.body { abort = a }
        }
        try? zero.stream.shutdown()  // §2.5: close_notify, so the destination need not wait for it
        #expect(abort?.reason == .protocolError)
        #expect(abort?.message.contains("PFN 0, which stream 0 owns") == true, "\(String(describing: abort))")
        guard case .failure(let error) = dst.wait(timeout: 30), let failure = error as? MigrationError else {
            Issue.record("the destination accepted a page on a stream that does not own it"); return
        }
        #expect(failure.disposition == .rolledBack)
        #expect(try pair.destinationMemory.readPages(startPFN: 0, count: 1) != foreign)
        Guarantee.destinationNeverRan(pair)
    }
}
