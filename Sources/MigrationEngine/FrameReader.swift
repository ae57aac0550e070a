import MigrationTLS
import MigrationWire

/// Frames in, through one decoder, on exactly one thread: not Sendable, so no other
/// thread can reach it, and handing it to the peer reader thread (`PeerInbox`) is a
/// move the compiler checks.
final class FrameReader {
    private let stream: TLSStream
    private var decoder: FrameDecoder
    private(set) var wireBytesReceived: UInt64 = 0
    private let readChunk = 256 << 10

    init(stream: TLSStream, peer: Role, limits: WireLimits) {
        self.stream = stream
        self.decoder = FrameDecoder(peer: peer, limits: limits)
    }

    /// Announced guest memory and device count, once HELLO is settled.
    func constrainInbound(memory: [MemoryRange], deviceCount: Int) {
        decoder.memory = memory
        decoder.deviceCount = deviceCount
    }

    /// The next frame that is not a keep-alive. Throws `.peerClosed` on a clean
    /// close, a TLS error on truncation, a wire error on bad bytes.
    func receive() throws(MigrationFailure) -> Frame {
        while true {
            let next: Frame?
            do { next = try decoder.next() } catch { throw MigrationFailure(error) }
            if let frame = next {
                if case .keepAlive = frame.body { continue }
                return frame
            }
            let bytes: [UInt8]
            do { bytes = try stream.read(maxCount: readChunk) } catch { throw .tls(error) }
            if bytes.isEmpty {
                throw decoder.bufferedByteCount > 0 ? .unexpectedFrame("stream ended inside a frame") : .peerClosed
            }
            wireBytesReceived += UInt64(bytes.count)
            decoder.feed(bytes)
        }
    }
}

@available(*, unavailable, message: "a FrameReader belongs to one thread")
extension FrameReader: Sendable {}
