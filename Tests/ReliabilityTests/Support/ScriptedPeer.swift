import Foundation
import TestSupport
import MigrationEngine
import MigrationTLS
import MigrationWire
import VFIODevice

/// One end of a session written by hand from docs/PROTOCOL.md, as an independent
/// implementer would: the test sends exactly the frames it wants and sees every frame
/// the engine sends back, keep-alives included.
final class ScriptedPeer: @unchecked Sendable {
    let stream: TLSStream
    private var encoder = FrameEncoder()
    private var decoder: FrameDecoder
    /// Every frame received so far, in order.
    private(set) var received: [Frame] = []

    init(stream: TLSStream, reading peer: Role, version: ProtocolVersion = .v1) {
        self.stream = stream
        decoder = FrameDecoder(peer: peer, version: version)
        stream.readTimeoutSeconds = 20
        stream.writeTimeoutSeconds = 20
    }

    /// A source that connected to `port` with the good certificate.
    /// `version` above 1: offered with ALPN (the receiver must select it).
    static func source(port: UInt16, pki: TestPKI, version: ProtocolVersion = .v1) throws -> ScriptedPeer {
        let alpn = version > .v1 ? [version.alpnIdentifier] : []
        let stream = try TLSConnector.connect(to: .tcp(host: "127.0.0.1", port: port), context: try pki.clientContext(alpn: alpn), timeoutSeconds: 5)
        guard version == .v1 || stream.applicationProtocol == version.alpnIdentifier else {
            throw SetupError("the receiver selected \(stream.applicationProtocol ?? "no protocol"), not \(version.alpnIdentifier)")
        }
        return ScriptedPeer(stream: stream, reading: .destination, version: version)
    }

    private let sendLock = NSLock()

    /// Thread-safe (a keep-alive thread may send while the test sends frames).
    func send(_ body: FrameBody, device: UInt32 = 0) throws {
        sendLock.lock(); defer { sendLock.unlock() }
        try stream.write(encoder.encode(body, device: device))
    }

    /// The next frame, keep-alives included (a version-2+ stream's ACKs are skipped);
    /// nil once the peer closed cleanly.
    func next() throws -> Frame? {
        while true {
            if let message = try decoder.nextMessage() {
                if case .frame(let f) = message { received.append(f); return f }
                continue
            }
            let bytes = try stream.read(maxCount: 1 << 16)
            if bytes.isEmpty { return nil }
            decoder.feed(bytes)
        }
    }

    /// The next frame that is not a keep-alive.
    func nextSignificant() throws -> Frame? {
        while let f = try next() { if case .keepAlive = f.body { continue }; return f }
        return nil
    }

    /// Frames until the peer closes; whether it closed with close_notify (not a timeout or reset).
    func readUntilClosed(timeoutSeconds: Double) -> (frames: [Frame], closedCleanly: Bool, error: String?) {
        stream.readTimeoutSeconds = timeoutSeconds
        var frames: [Frame] = []
        do {
            while let f = try next() { frames.append(f) }
            return (frames, true, nil)
        } catch {
            return (frames, false, "\(error)")
        }
    }

    var abort: Abort? {
        for f in received { if case .abort(let a) = f.body { return a } }
        return nil
    }

    /// A source's last steps (§6): READY, COMMIT, RESUMED; throws naming what came instead.
    func commitAfterReady() throws {
        let ready = try nextSignificant()
        guard case .ready = ready?.body else { throw SetupError("expected READY, got \(String(describing: ready?.body))") }
        try send(.commit)
        let resumed = try nextSignificant()
        guard case .resumed = resumed?.body else { throw SetupError("expected RESUMED, got \(String(describing: resumed?.body))") }
    }

    /// Reads the destination's HELLO (a source's first step).
    func readHello() throws -> Hello {
        guard let f = try nextSignificant(), case .hello(let h) = f.body else { throw SetupError("no HELLO from the destination") }
        return h
    }

    /// Saves each source device whole (stop-and-copy) and sends its chunks and DEVICE_END
    /// with `digest` (§5.6, §16); `corrupt` flips byte `corruptByte` of that device's field.
    func sendDeviceStreams(_ pair: SimPair, corruptDigestOf corrupt: Int? = nil, corruptByte: Int = 0,
                           digest algorithm: DeviceDigestAlgorithm = .sha256) throws {
        for (i, d) in pair.source.enumerated() {
            try d.device.setState([.saving, .running])
            try d.device.setState([.saving])
            var save = SaveSequence(device: d.device)
            let digest = DeviceDigest(algorithm)
            var bytes: UInt64 = 0, chunks: UInt64 = 0
            while let chunk = try save.nextChunk() {
                digest.update(chunk.bytes)
                bytes += UInt64(chunk.bytes.count); chunks += 1
                try send(.deviceData(DeviceData(phase: .stopcopy, encoding: .raw, originalLength: UInt32(chunk.bytes.count), payload: chunk.bytes)), device: UInt32(i))
            }
            var sha = digest.finalize()
            if corrupt == i { sha[corruptByte] ^= 0xFF }
            try send(.deviceEnd(DeviceEnd(totalBytes: bytes, chunkCount: chunks, sha256: sha)), device: UInt32(i))
        }
    }
}

/// A receiver listening on 127.0.0.1 for one session, run on its own thread.
struct ListeningReceiver {
    let port: UInt16
    let result: ResultBox<MigrationStats>
    let listener: TLSListener

    /// `alpn`: select the versions `options` speak (else version 1 only).
    init(_ pair: SimPair, pki: TestPKI, options: ReceiverOptions = Rig.receiverOptions(peerTimeout: 20), alpn: Bool = false) throws {
        let listener = try TLSListener(endpoint: .tcp(host: "127.0.0.1", port: 0),
                                       context: try pki.serverContext(alpn: alpn ? options.applicationProtocols : []))
        guard case .tcp(_, let port) = listener.boundEndpoint else { throw SetupError("no port") }
        let receiver = Receiver(devices: pair.destination, memory: pair.destinationMemory, options: options)
        self.port = port
        self.listener = listener
        result = background { () throws -> MigrationStats in
            let stream = try listener.accept(timeoutSeconds: 20)
            return try receiver.run(stream: stream)
        }
    }

    var error: MigrationError? {
        if case .failure(let e) = result.wait(timeout: 60) { return e as? MigrationError }
        return nil
    }
}
