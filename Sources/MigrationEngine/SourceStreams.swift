import MigrationTLS
import MigrationWire

/// Version 3 (PROTOCOL.md §14), source: the session's extra streams 1..<count.
/// Each is a TLS connection of its own, joined to the session (JOIN), with its own
/// writer (its own numbering from 0) and keep-alive; the session feeds each its
/// own send pipeline with the pages whose PFNs it owns (`routing`). The source
/// never reads an extra stream after its JOIN_ACCEPT: the destination speaks on
/// stream 0 only.
final class SourceStreams {
    struct Extra {
        let index: Int
        let writer: FrameWriter
        let keepAlive: PeriodicTask
    }
    let routing: StreamRouting
    let extras: [Extra]

    /// Opens and joins streams 1..<routing.count; on a failure the ones already open are closed.
    init(routing: StreamRouting, connect: Reconnect, credentials: ResumeCredentials, options: SenderOptions,
         bandwidth: BandwidthLimiter) throws(MigrationFailure) {
        self.routing = routing
        var opened: [Extra] = []
        for index in 1..<routing.count {
            do throws(MigrationFailure) {
                let stream = try Self.join(index, connect: connect, credentials: credentials, options: options)
                // One limiter for every stream: `--bandwidth` caps the session, not each connection.
                let writer = FrameWriter(stream: stream, limiter: bandwidth)
                opened.append(Extra(index: index, writer: writer, keepAlive: startKeepAlive(writer: writer, peerTimeoutSeconds: options.peerTimeoutSeconds)))
            } catch {
                for extra in opened { extra.keepAlive.stop(); extra.writer.stream.close() }
                throw error
            }
        }
        extras = opened
    }

    var wireBytesSent: UInt64 { extras.reduce(0) { $0 + $1.writer.wireBytesSent } }

    /// Every page of stream `extra` was written: STREAM_END, its last frame (§14.4).
    func end(_ extra: Extra) throws(MigrationFailure) {
        extra.keepAlive.stop()
        try extra.writer.sendStreamEnd(index: extra.index)
    }

    /// The session succeeded: close_notify on every extra stream and a bounded read of
    /// the destination's, which it sent once it applied the stream (§2.5, §14.4).
    func shutDown() {
        for extra in extras {
            try? extra.writer.stream.shutdown()
            extra.writer.stream.close()
        }
    }

    /// The session failed: no more keep-alives, every extra connection closed at once
    /// (the destination learns why on stream 0).
    func close() {
        for extra in extras {
            extra.keepAlive.stop()
            extra.writer.stream.close()
        }
    }

    /// One extra connection (§14.3): TLS with version 3 and the session's destination,
    /// the destination's RESUME (its proof checked), our JOIN, its JOIN_ACCEPT.
    private static func join(_ index: Int, connect: Reconnect, credentials: ResumeCredentials,
                             options: SenderOptions) throws(MigrationFailure) -> TLSStream {
        let stream: TLSStream
        do { stream = try connect() } catch { throw .tls(error) }
        do throws(MigrationFailure) {
            guard stream.applicationProtocol == ProtocolVersion.v3.alpnIdentifier else {
                throw .incompatible("stream \(index): the destination did not select protocol version 3 on the extra connection")
            }
            guard stream.peerName == credentials.peerName else {
                throw .incompatible("stream \(index): the destination presented \(stream.peerName), the session's is \(credentials.peerName)")
            }
            var handshake = ResumeHandshakeReader(stream: stream, peer: .destination, credentials: credentials, limits: options.limits, version: .v3)
            let theirs = try expectResume(&handshake, index: index)
            guard try credentials.verifies(theirs, on: stream) else {
                handshake.refuse(.badProof, "source: the destination's proof does not match this session's secret")
                throw .incompatible("stream \(index): the destination's RESUME proof is wrong")
            }
            let join = try credentials.joinFrame(on: stream, index: index)
            do throws(TLSError) { try stream.write(join) } catch { throw .tls(error) }
            switch try handshake.next() {
            case .joinAccept(let accept) where Int(accept.streamIndex) == index: break
            case .refuse(let refusal): throw .incompatible("the destination refused stream \(index) (\(refusal.reason)): \(refusal.message)")
            case .abort(let abort): throw .peerAborted(abort.reason, abort.message)
            default: throw .unexpectedFrame("stream \(index): expected JOIN_ACCEPT of stream \(index)")
            }
        } catch {
            stream.close()
            throw error
        }
        stream.readTimeoutSeconds = options.peerTimeoutSeconds
        stream.writeTimeoutSeconds = options.peerTimeoutSeconds
        return stream
    }

    private static func expectResume(_ handshake: inout ResumeHandshakeReader, index: Int) throws(MigrationFailure) -> Resume {
        switch try handshake.next() {
        case .resume(let theirs): return theirs
        case .refuse(let refusal): throw .incompatible("the destination refused stream \(index) (\(refusal.reason)): \(refusal.message)")
        case .abort(let abort): throw .peerAborted(abort.reason, abort.message)
        default: throw .unexpectedFrame("stream \(index): the destination did not greet the extra connection with RESUME")
        }
    }
}

@available(*, unavailable, message: "the source session's thread owns its streams")
extension SourceStreams: Sendable {}
