import MigrationTLS
import MigrationWire

/// Frames in, through one decoder, on exactly one thread: not Sendable, so no other
/// thread can reach it, and handing it to the peer reader thread (`PeerInbox`) is a
/// move the compiler checks.
///
/// In version 2 the decoder outlives its connections: `suspend()` when one is lost,
/// `resume…` and `attach` to go on reading the same stream on a new one.
final class FrameReader {
    private var stream: TLSStream
    private var decoder: FrameDecoder
    private(set) var wireBytesReceived: UInt64 = 0
    /// Version 2, source: the destination's ACKs, handed over as they are decoded.
    var onAck: ((StreamPosition) throws(MigrationFailure) -> Void)?

    init(stream: TLSStream, peer: Role, limits: WireLimits, version: ProtocolVersion = .v1) {
        self.stream = stream
        self.decoder = FrameDecoder(peer: peer, limits: limits, version: version)
    }

    var version: ProtocolVersion { decoder.version }
    /// Where the peer's stream stands (the destination's position, §13.3).
    var position: StreamPosition { decoder.position }
    var decoderState: DecoderState { decoder.state }
    var currentStream: TLSStream { stream }

    /// Version 3, source: the session's streams, whose positions ACK and RESUME_ACCEPT carry (§14.5).
    var sessionStreams: Int {
        get { decoder.sessionStreams }
        set { decoder.sessionStreams = newValue }
    }

    /// Announced guest memory and device count, once HELLO is settled.
    func constrainInbound(memory: [MemoryRange], deviceCount: Int) {
        decoder.memory = memory
        decoder.deviceCount = deviceCount
    }

    /// The connection is gone: a partial frame is dropped, the stream state kept.
    func suspend() {
        if !decoder.isSuspended { decoder.suspend() }
    }

    /// Destination: RESUME_ACCEPT sent on `stream`; `bytes` are the source's first
    /// numbered frames that came with its RESUME.
    func resume(on stream: TLSStream, bytes: [UInt8]) {
        decoder.resume()
        attach(stream, bytes: bytes)
    }

    /// Source: the destination's RESUME_ACCEPT, read on `stream`.
    func resume(with accept: ResumeAccept, on stream: TLSStream, bytes: [UInt8]) throws(MigrationFailure) {
        do { try decoder.resume(with: accept) } catch { throw MigrationFailure(error) }
        attach(stream, bytes: bytes)
    }

    private func attach(_ stream: TLSStream, bytes: [UInt8]) {
        self.stream = stream
        if !bytes.isEmpty { decoder.feed(bytes) }
    }

    /// The next frame that is not a keep-alive (or, in version 2, an ACK). Throws
    /// `.peerClosed` on a clean close, a TLS error on truncation, a wire error on bad bytes.
    func receive() throws(MigrationFailure) -> Frame {
        while true {
            let next: WireMessage?
            do { next = try decoder.nextMessage() } catch { throw MigrationFailure(error) }
            switch next {
            case .frame(let frame):
                if case .keepAlive = frame.body { continue }
                return frame
            case .resumption(let r):
                if case .ack(let position) = r.body { try onAck?(position) }
                continue
            case nil:
                break
            }
            let count = try readMore()
            if count == 0 {
                // Version 2: a connection that ends is a lost connection, partial frame or not (§13.4).
                if decoder.version >= .v2 && decoder.state != .awaitingHello { throw .peerClosed }
                throw decoder.bufferedByteCount > 0 ? .unexpectedFrame("stream ended inside a frame") : .peerClosed
            }
            wireBytesReceived += UInt64(count)
        }
    }

    private func readMore() throws(MigrationFailure) -> Int {
        do { return try decoder.fill(from: stream) } catch { throw .tls(error) }
    }
}

extension FrameDecoder {
    /// At most this much is decrypted per read.
    static let readChunk = 256 << 10

    /// Decrypts into the buffer what completes the pending header or frame (at most
    /// `readChunk` a call): a large frame lands in a buffer of its own, and its
    /// payloads are applied from there without another copy. 0: the stream ended.
    /// Every reader of a connection (stream 0's and each extra stream's) reads this way.
    mutating func fill(from stream: TLSStream) throws(TLSError) -> Int {
        try fill(maxCount: min(bytesWanted, Self.readChunk)) { (span: inout OutputSpan<UInt8>) throws(TLSError) in
            try stream.read(into: &span)
        }
    }
}

@available(*, unavailable, message: "a FrameReader belongs to one thread")
extension FrameReader: Sendable {}
