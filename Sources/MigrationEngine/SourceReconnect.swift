import Foundation
import MigrationTLS
import MigrationWire
import SyncPrimitives
import VFIODevice

/// Reconnects a version-2 source session whose connection broke (PROTOCOL.md §13.4,
/// §13.5, §13.7). Runs on the peer reader thread, which owns the decoder: the
/// session's own thread goes on where it stood (pre-copy keeps the dirty log
/// collecting; writers wait in `FrameWriter` until the replay is out).
public typealias Reconnect = @Sendable () throws(TLSError) -> TLSStream

struct SourceReconnect: Sendable {
    let credentials: ResumeCredentials
    let writer: FrameWriter
    let connect: Reconnect
    let options: SenderOptions
    let memory: GuestMemory?
    let events: EventSink
    let link: LinkProgress
    let cancellation: Cancellation
    /// Version 3, several streams (§14.5): the extra streams, dropped and joined again with stream 0.
    let extras: ExtraStreamLinks?

    /// Backoff between attempts: 250 ms doubling to 2 s, ±20 % jitter.
    static let firstDelaySeconds = 0.25
    static let maxDelaySeconds = 2.0

    private enum AttemptFailure: Error {
        /// This connection did not work out; the next attempt may.
        case retry(String)
        /// The session cannot be resumed.
        case end(MigrationFailure)
    }

    /// After `cause` broke the connection: the session on a new one, with the frames
    /// RESUME_ACCEPT's progress stands for (READY, RESUMED the source may have
    /// missed), or the failure that ends the session.
    func recover(_ reader: FrameReader, after cause: MigrationFailure) -> Result<[Frame], MigrationFailure> {
        if cancellation.isCancelled { return end(.cancelled) }
        guard cause.isConnectionLoss, writer.markLost(reader.currentStream) else { return end(cause) }
        extras?.suspend()
        reader.suspend()
        events(.connectionLost(reason: "\(cause)"))
        link.lost()
        let lostAt = monotonicSeconds()
        let deadline = lostAt + options.reconnectTimeoutSeconds
        var delay = Self.firstDelaySeconds
        var attempt = 0
        var lastProblem = "\(cause)"
        while monotonicSeconds() < deadline {
            if cancellation.isCancelled { return end(.cancelled) }
            attempt += 1
            events(.reconnecting(attempt: attempt, elapsedSeconds: monotonicSeconds() - lostAt))
            link.reconnecting()
            switch attemptResume(reader) {
            case .success(let frames): return .success(frames)
            case .failure(.end(let failure)): return end(failure)
            case .failure(.retry(let why)): lastProblem = why
            }
            pause(delay * Double.random(in: 0.8...1.2), until: deadline)
            delay = min(delay * 2, Self.maxDelaySeconds)
        }
        return end(.timeout("the connection broke (\(cause)) and was not resumed within --reconnect-timeout \(options.reconnectTimeoutSeconds) s (\(attempt) attempt(s); last: \(lastProblem))"))
    }

    private func end(_ failure: MigrationFailure) -> Result<[Frame], MigrationFailure> {
        writer.abandonResumption(failure)
        extras?.abandon(failure)
        return .failure(failure)
    }

    private func pause(_ seconds: Double, until deadline: Double) {
        let wake = min(monotonicSeconds() + seconds, deadline)
        while monotonicSeconds() < wake && !cancellation.isCancelled { Thread.sleep(forTimeInterval: 0.05) }
    }

    /// The session ends before COMMIT while its connection is gone: one connection
    /// that proves itself (RESUME) and gives up at once with an unnumbered ABORT
    /// (§13.5), so the destination ends too instead of waiting for a resume. Best effort.
    func deliverAbort(_ abort: Abort) {
        guard let stream = try? connect() else { return }
        defer { stream.close() }
        guard let version = ProtocolVersion.negotiated(alpn: stream.applicationProtocol, offered: options.applicationProtocols), version >= .v2,
              stream.peerName == credentials.peerName else { return }
        var handshake = ResumeHandshakeReader(stream: stream, peer: .destination, credentials: credentials, limits: options.limits, version: version)
        guard case .resume(let theirs)? = try? handshake.next(), (try? credentials.verifies(theirs, on: stream)) == true,
              let mine = try? credentials.resumeFrame(on: stream, role: .source) else { return }
        try? stream.write(mine + FrameEncoder.handshakeAbort(abort))
        try? stream.shutdown()
    }

    /// One connection: TLS (version 2, the same destination name), the handshake, the replay.
    private func attemptResume(_ reader: FrameReader) -> Result<[Frame], AttemptFailure> {
        let stream: TLSStream
        do { stream = try connect() } catch { return .failure(.retry("\(error)")) }
        // A version-3 connection resumes a one-stream session exactly as version 2 does.
        guard let version = ProtocolVersion.negotiated(alpn: stream.applicationProtocol, offered: options.applicationProtocols), version >= .v2 else {
            stream.close()
            return .failure(.end(.incompatible("the destination no longer offers session resumption (protocol version 2)")))
        }
        guard stream.peerName == credentials.peerName else {
            stream.close()
            return .failure(.retry("the destination presented \(stream.peerName), the session's is \(credentials.peerName)"))
        }
        var handshake = ResumeHandshakeReader(stream: stream, peer: .destination, credentials: credentials, limits: options.limits, version: version)
        do throws(MigrationFailure) {
            while true {
                switch try handshake.next() {
                case .resume(let theirs):
                    guard try credentials.verifies(theirs, on: stream) else {
                        handshake.refuse(.badProof, "source: the destination's proof does not match this session's secret")
                        return .failure(.retry("the destination's RESUME proof is wrong"))
                    }
                    let mine = try credentials.resumeFrame(on: stream, role: .source)
                    do throws(TLSError) { try stream.write(mine) } catch { throw .tls(error) }
                case .resumeAccept(let accept):
                    return finish(accept, &handshake, reader)
                case .refuse(let refusal):
                    stream.close()
                    if refusal.reason.isTransient { return .failure(.retry("the destination is busy: \(refusal.message)")) }
                    return .failure(.end(.incompatible("the destination refused to resume the session (\(refusal.reason)): \(refusal.message)")))
                case .abort(let abort):
                    try? stream.shutdown()  // close_notify: the destination knows we have its outcome
                    stream.close()
                    return .failure(.end(.peerAborted(abort.reason, abort.message)))
                case .hello:
                    try? stream.write(FrameEncoder.handshakeAbort(Abort(reason: .incompatible, message: "source: resuming a session, not starting a new one")))
                    stream.close()
                    return .failure(.end(.incompatible("the destination no longer holds the session (it greeted with a new HELLO)")))
                case .join, .joinAccept:
                    // Only JOIN_ACCEPT gets here (JOIN is the source's): a stream's answer to a resume.
                    stream.close()
                    return .failure(.end(.unexpectedFrame("the destination answered RESUME with JOIN_ACCEPT")))
                }
            }
        } catch {
            if !error.isConnectionLoss { handshake.refuse(.unknownSession, "source: \(error)") }
            stream.close()
            return .failure(.retry("\(error)"))
        }
    }

    /// RESUME_ACCEPT: the decoder continues at the destination's next sequence, the
    /// window is replayed from its position, the extra streams join again (§14.5),
    /// and the frames its progress stands for are handed to the session.
    private func finish(_ accept: ResumeAccept, _ handshake: inout ResumeHandshakeReader, _ reader: FrameReader) -> Result<[Frame], AttemptFailure> {
        let stream = handshake.stream
        let before = reader.decoderState
        var replayed: UInt64 = 0
        var attached = false
        do throws(MigrationFailure) {
            try reader.resume(with: accept, on: stream, bytes: handshake.remainingBytes())
            replayed = try writer.reattach(stream, replayingFrom: accept.position, regenerate: regenerate)
            attached = true
            // From READY on every extra stream ended and was applied: none joins again.
            if let extras, accept.progress == .receiving {
                switch try extras.rejoin(accept.position.streamSequences, regenerate: regenerate) {
                case .rejoined(let bytes): replayed += bytes
                case .refused(let why): return suspendAgain(stream, reader, why)
                }
            }
        } catch {
            if error.isConnectionLoss { return suspendAgain(stream, reader, "\(error)") }
            reader.suspend()
            // Attached, stream 0 carries the session's numbered ABORT (the session fails); before, an unnumbered one.
            if !attached {
                try? stream.write(FrameEncoder.handshakeAbort(Abort(reason: .protocolError, message: "source: cannot resume: \(error)")))
                stream.close()
            }
            return .failure(.end(error))
        }
        stream.readTimeoutSeconds = options.peerTimeoutSeconds
        stream.writeTimeoutSeconds = options.peerTimeoutSeconds
        if cancellation.attach(stream) { stream.close() }
        events(.resumed(fromSequence: accept.position.nextSequence, bytesReplayed: replayed))
        link.up()
        var missed: [Frame] = []
        let sawReady = before == .ready || before == .resumed
        if accept.progress >= .ready && !sawReady { missed.append(Frame(device: 0, sequence: 0, body: .ready)) }
        if accept.progress == .resumed && before != .resumed { missed.append(Frame(device: 0, sequence: 0, body: .resumed)) }
        return .success(missed)
    }

    /// A loss (or a JOIN refused because the destination suspended again) after
    /// RESUME_ACCEPT: stream 0 may be attached already, so the whole session is
    /// suspended again and the next attempt resumes it (§14.5).
    private func suspendAgain(_ stream: TLSStream, _ reader: FrameReader, _ why: String) -> Result<[Frame], AttemptFailure> {
        reader.suspend()
        writer.markLost(stream)
        extras?.suspend()
        return .failure(.retry(why))
    }

    /// A replayed frame's bytes: retained ones as they were, PAGES read again (§13.7).
    private func regenerate(_ item: RetainedWindow.ReplayItem, _ encoder: FrameEncoder) throws(MigrationFailure) -> [UInt8] {
        switch item {
        case .retained(let bytes): return bytes
        case .keepAlive(let sequence): return try wire { () throws(WireError) in try encoder.regenerated(.keepAlive, sequence: sequence) }
        case .pages(let sequence, let pageSize, let runs):
            guard let memory else { preconditionFailure("PAGES retained without guest memory") }
            let compressor = try wire { () throws(WireError) in try PayloadCompressor(policy: options.compression) }
            var segments: [PageSegment] = []
            for run in runs {
                let bytes = try deviceCall(nil) { () throws(DeviceError) in try memory.readPages(startPFN: run.startPFN, count: Int(run.pageCount)) }
                segments += try wire { () throws(WireError) in try compressor.encodePages(startPFN: run.startPFN, pageSize: memory.pageSize, bytes: bytes) }
            }
            let pages = Pages(pageSize: pageSize, segments: segments)
            return try wire { () throws(WireError) in try encoder.regenerated(.pages(pages), sequence: sequence) }
        }
    }

    private func wire<T>(_ body: () throws(WireError) -> T) throws(MigrationFailure) -> T {
        do { return try body() } catch { throw MigrationFailure(error) }
    }
}
