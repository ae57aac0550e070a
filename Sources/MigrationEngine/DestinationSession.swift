import Foundation
import MigrationTLS
import MigrationWire
import SyncPrimitives
import VFIODevice

/// One migration from the destination's side, as an explicit state machine. The
/// state only moves forward and two threads move it: this one with what arrived
/// (stop-and-copy data, COMPLETE) and the applier with what it applied (READY sent).
/// A failure's phase and disposition are read from it.
final class DestinationSession {
    enum State: Comparable {
        case hello, precopy, stopCopy, complete, ready, committed, done, failed

        var phase: MigrationPhase {
            switch self {
            case .hello: return .hello
            case .precopy: return .precopy
            case .stopCopy: return .stopcopy
            case .complete: return .complete
            case .ready: return .ready
            case .committed: return .resume
            case .done, .failed: return .done
            }
        }

        /// What a failure in this state leaves behind, i.e. the exit code.
        var disposition: FailureDisposition {
            switch self {
            case .hello: return .notStarted
            case .precopy, .stopCopy, .complete, .ready: return .rolledBack
            case .committed, .done, .failed: return .afterCommit
            }
        }
    }
    typealias Pipeline = ReceivePipeline.Pipeline

    /// How long one read waits before the session looks at the applier and the cancel again.
    private static let pollSeconds = 0.2
    /// Version 2 reads in shorter slices: an ACK is due at most 250 ms after a frame.
    private var pollSeconds: Double { acks == nil ? Self.pollSeconds : 0.1 }

    private let state = LockedValue(State.hello)
    private var devices: DestinationDeviceSet
    private let memory: GuestMemory?
    private let options: ReceiverOptions
    private let events: EventSink
    private let cancellation: Cancellation
    /// The session's first connection (a resumed session reads `reader.currentStream`).
    private let stream: TLSStream
    private let reader: FrameReader
    /// Version 2 (§13): where resuming connections arrive; nil = a lost connection fails.
    private let listener: TLSListener?
    private var acceptor: ResumeAcceptor?
    /// Version 3 with several streams (§14): the extra streams, suspended with stream 0 (§14.5).
    private var joins: DestinationStreams?
    private var acks: AckSchedule?
    /// Version 2 with resumption: the connection's state and outage clock in `progress`.
    private var link: LinkProgress?
    private let version: ProtocolVersion?
    private let writer: FrameWriter
    private let progress: LockedValue<ApplyProgress>
    private let started = ContinuousClock.now
    private var keepAlive: PeriodicTask?
    private var pipeline: Pipeline?
    private var downtimeMs: Double = 0
    /// Stream 0's page decoder, with the source's zstd lanes once its HELLO said how many.
    private var pageDecoder: PageDecoderSlot
    /// The session's zstd lanes, shared by every stream's page decoder (§15.2).
    private var laneBudget = SessionLanes(limit: 0)
    /// DEVICE_END's digest, from the source's HELLO (§16): SHA-256 until then.
    private var digestAlgorithm = DeviceDigestAlgorithm.sha256

    init(devices: [DestinationDevice], memory: GuestMemory?, options: ReceiverOptions, events: @escaping EventSink,
         stream: TLSStream, listener: TLSListener?, cancellation: Cancellation) {
        self.devices = DestinationDeviceSet(devices)
        self.memory = memory; self.options = options; self.events = events
        self.stream = stream; self.cancellation = cancellation; self.listener = listener
        version = try? ResumeSettings.negotiated(stream, offered: options.applicationProtocols)
        reader = FrameReader(stream: stream, peer: .source, limits: options.limits, version: version ?? .v1)
        writer = FrameWriter(stream: stream)
        progress = LockedValue(ApplyProgress(devices: devices.map { DeviceStats(name: $0.name) }))
        pageDecoder = PageDecoderSlot(limits: options.limits, budget: SessionLanes(limit: 0))
        stream.readTimeoutSeconds = options.peerTimeoutSeconds
        stream.writeTimeoutSeconds = options.peerTimeoutSeconds
    }

    func run() throws(MigrationError) -> MigrationStats {
        do throws(MigrationFailure) {
            try hello()
            try transfer()
            try commit()
            return finish()
        } catch {
            throw fail(error)
        }
    }

    // MARK: - phases

    private func hello() throws(MigrationFailure) {
        guard let version else { throw .incompatible("the source selected an ALPN protocol this side does not speak") }
        let exchange = HelloExchange(names: devices.devices.map(\.name), compatibility: devices.devices.map(\.compatibility), memory: memory)
        // Extra streams arrive on the listener, which only a resumable session watches.
        let maxStreams = listener != nil && options.reconnectTimeoutSeconds > 0 ? options.maxStreams : 1
        let theirs = try exchange.asDestination(reader: reader, writer: writer, encodings: options.helloEncodings, version: version,
                                                maxStreams: maxStreams, maxLanes: options.maxZstdLanes)
        let streams = Int(theirs.streams?.count ?? 1)
        // Stream 0's decoder took the lane count from this HELLO as it decoded it.
        let lanes = version >= .v4 ? Int(theirs.streams?.lanes ?? 0) : 0
        laneBudget = SessionLanes(limit: lanes)
        digestAlgorithm = DeviceDigestAlgorithm(sessionEncodings: theirs.encodings)
        pageDecoder = PageDecoderSlot(limits: options.limits, budget: laneBudget)
        events(.helloAccepted(devices: devices.devices.map(\.name), memoryBytes: memory?.size ?? 0, security: stream.security,
                              streams: streams, zstdLanes: lanes, deviceDigest: digestAlgorithm))
        if version >= .v2 { try enableResumption(source: theirs, exchange: exchange) }
        keepAlive = startKeepAlive(writer: writer, peerTimeoutSeconds: options.peerTimeoutSeconds)
    }

    /// Version 2: ACKs (always), and with a listener the session survives a lost
    /// connection: the resume secret is taken and resuming connections are accepted.
    /// Version 3 with several streams: the listener also takes their JOINs (§14.3), and
    /// a lost connection of any stream suspends them all (§14.5).
    private func enableResumption(source: Hello, exchange: HelloExchange) throws(MigrationFailure) {
        acks = AckSchedule(bytesReceived: bytesReceived, position: currentPosition)
        guard let listener, options.reconnectTimeoutSeconds > 0 else { return }
        let credentials = try ResumeCredentials(firstConnection: stream, sessionID: source.sessionID)
        if let offer = source.streams, offer.count > 1 {
            joins = DestinationStreams(DestinationStreams.Context(
                routing: StreamRouting(offer), source: source, limits: options.limits, workers: options.workers,
                pageDecoders: (1..<Int(offer.count)).map { _ in PageDecoderSlot(limits: options.limits, budget: laneBudget) },
                peerTimeoutSeconds: options.peerTimeoutSeconds, devices: devices.devices, memory: memory, writer: writer,
                events: events, progress: progress, state: state))
        }
        writer.enableResumption(policy: .drop, window: nil, deviceCount: devices.devices.count)
        link = LinkProgress(phase: .precopy, events: events)
        acceptor = ResumeAcceptor(listener: listener, credentials: credentials, current: stream, limits: options.limits,
                                  versionOneRefusal: try exchange.versionOneRefusal(encodings: options.encodings), events: events, joins: joins)
    }

    /// Devices to RESUMING, then frames until COMMIT, everything before it applied
    /// in received order through the pipeline.
    private func transfer() throws(MigrationFailure) {
        state.advance(to: .precopy)
        events(.phase(.precopy))
        try devices.startResuming()
        let pipeline = makePipeline()
        self.pipeline = pipeline
        // Short reads: an applier or decompression failure is acted on at once, even
        // while the source only sends keep-alives (which `receive` swallows).
        stream.readTimeoutSeconds = min(pollSeconds, options.peerTimeoutSeconds)
        while true {
            if cancellation.isCancelled { throw .cancelled }
            if let e = pipeline.error { throw e }
            let frame = try receive(failingWith: pipeline)
            switch frame.body {
            case .commit:
                try pipeline.finish()
                self.pipeline = nil
                return
            case .abort(let a):
                throw .peerAborted(a.reason, a.message)
            case .deviceData(let d) where d.phase == .stopcopy:
                progress.withLock { if $0.stopCopyStarted == nil { $0.stopCopyStarted = .now } }
                link?.devicesStopped()
                state.advance(to: .stopCopy)
            case .complete:
                // READY only once every extra stream's pages are applied too (§14.4).
                try waitForEveryStream()
                state.advance(to: .complete)
            case .pages(let p):
                // Decoded by the applier itself: no worker has anything to do with it.
                try pipeline.submit(passthrough: .pages(p))
                continue
            default:
                break
            }
            try pipeline.submit(frame)
        }
    }

    /// COMMIT, and READY went out before it: resume. A failure from here on is after
    /// commit; an operator must act.
    private func commit() throws(MigrationFailure) {
        guard progress.withLock({ $0.readySent }) else {
            throw .unexpectedFrame("COMMIT arrived before this side sent READY")
        }
        state.advance(to: .committed)
        events(.phase(.resume))
        try devices.resume()
        // Only now may the vCPUs run: every device is RUNNING and the source never will be again.
        options.guestControl?.startGuest()
        downtimeMs = progress.withLock { $0.stopCopyStarted }.map { (ContinuousClock.now - $0).milliseconds } ?? 0
        try writer.send(.resumed)
    }

    private func finish() -> MigrationStats {
        keepAlive?.stop()
        // §2.5: after RESUMED both ends send close_notify at once and read until the
        // other's; neither waits for the other to go first.
        let stream = reader.currentStream
        let confirmed = (try? stream.shutdownConfirmingPeer()) ?? false
        stream.close()
        joins?.finish()
        if let acceptor {
            // §13.8: a source that lost RESUMED reconnects to learn the outcome.
            if !confirmed {
                let position = currentPosition
                answerOutcome(acceptor) { [writer, events] () throws(MigrationFailure) -> [UInt8] in
                    let accept = ResumeAccept(progress: .resumed, destinationNextSequence: writer.nextSequence, position: position)
                    defer { events(.resumed(fromSequence: accept.position.nextSequence, bytesReplayed: 0)) }
                    return try ResumeCredentials.handshakeFrame(.resumeAccept(accept))
                }
            }
            acceptor.stop()
        }
        state.advance(to: .done)
        let applied = progress.current
        var stats = MigrationStats(role: "destination")
        stats.downtimeMs = downtimeMs
        stats.totalSeconds = (ContinuousClock.now - started).seconds
        stats.wireBytes = reader.wireBytesReceived + (joins?.wireBytesReceived ?? 0)
        stats.iterations = applied.iterations
        stats.rawBytes = applied.rawBytes
        stats.pagesSent = applied.pages
        stats.zeroPages = applied.zeroPages
        stats.copiedPages = applied.copiedPages
        stats.devices = applied.devices
        stats.deviceBytes = stats.devices.reduce(0) { $0 + $1.bytes }
        events(.phase(.done))
        events(.finished(stats))
        return stats
    }

    // MARK: - failure

    private func fail(_ cause: MigrationFailure) -> MigrationError {
        let reached = state.current
        defer { state.advance(to: .failed) }
        writer.abandonResumption(cause)
        if reached.disposition == .afterCommit { return failAfterCommit(cause) }
        acceptor?.stop()
        var failure = cancellation.isCancelled ? .cancelled : cause
        // The applier's reason beats the broken pipe it caused.
        if case .peerClosed = cause, let applierFailure = pipeline?.error { failure = applierFailure }
        // A READY or keep-alive blocked on a source that stopped reading must not hold
        // the ABORT back for the whole peer timeout.
        writer.stream.writeTimeoutSeconds = 2
        pipeline?.abort(failure)
        joins?.stop()
        devices.abandon()
        keepAlive?.stop()
        writer.endWithAbort(failure, message: failure.abortMessage(side: "destination", phase: reached.phase))
        options.logger.notice("migration failed", metadata: ["phase": "\(reached.phase)", "device": "\(failure.device ?? "-")", "cause": "\(failure)"])
        return MigrationError(phase: reached.phase, device: failure.device, failure: failure, disposition: reached.disposition)
    }

    /// After COMMIT nothing is undone: the source will not run its devices again, so
    /// the devices stay as they are and the operator decides (exit 3).
    private func failAfterCommit(_ cause: MigrationFailure) -> MigrationError {
        keepAlive?.stop()
        let text = cause.deviceMessage.map { "destination: device \(cause.device ?? "-") failed to resume: \($0)" }
            ?? cause.abortMessage(side: "destination", phase: .resume)
        let abort = Abort(reason: cause.abortReason, message: text)
        let stream = writer.stream
        let delivered = (try? writer.send(.abort(abort))) != nil && ((try? stream.shutdownConfirmingPeer()) ?? false)
        stream.close()
        joins?.stop()
        if let acceptor {
            // §13.8: a source that lost the ABORT reconnects; it gets the ABORT again.
            if !delivered { answerOutcome(acceptor) { () throws(MigrationFailure) -> [UInt8] in FrameEncoder.handshakeAbort(abort) } }
            acceptor.stop()
        }
        let reached = state.current
        return MigrationError(phase: reached.phase, device: cause.device, failure: cause, disposition: reached.disposition)
    }

    // MARK: - pieces

    /// The next frame. Throws the pipeline's error as soon as it fails, and a read
    /// timeout only after `peerTimeoutSeconds` without a byte (keep-alives count).
    private func receive(failingWith pipeline: Pipeline) throws(MigrationFailure) -> Frame {
        var seen = reader.wireBytesReceived
        var lastByte = ContinuousClock.now
        while true {
            if let e = pipeline.error { throw e }
            if cancellation.isCancelled { throw .cancelled }
            if let failure = joins?.failure { throw failure }
            // An extra stream lost: the whole session suspends (§14.5).
            if let loss = joins?.lost {
                try resume(after: loss)
                seen = reader.wireBytesReceived
                lastByte = .now
            }
            do {
                let frame = try reader.receive()
                try acknowledgeIfDue()
                return frame
            } catch {
                if case .tls(.readTimeout) = error {
                    if let failure = joins?.failure { throw failure }
                    if joins?.lost != nil { continue }
                    try acknowledgeIfDue()
                    if reader.wireBytesReceived != seen {
                        seen = reader.wireBytesReceived
                        lastByte = .now
                        continue
                    }
                    guard (ContinuousClock.now - lastByte).seconds >= options.peerTimeoutSeconds else { continue }
                }
                let loss: MigrationFailure = if case .tls(.readTimeout) = error { .tls(.readTimeout(seconds: options.peerTimeoutSeconds)) } else { error }
                try resume(after: loss)
                seen = reader.wireBytesReceived
                lastByte = .now
            }
        }
    }

    /// §13.3: an ACK after 1 MiB of source frames, or 250 ms after one not acknowledged.
    private func acknowledgeIfDue() throws(MigrationFailure) {
        guard var schedule = acks else { return }
        defer { acks = schedule }
        let bytes = bytesReceived
        let position = currentPosition
        if schedule.isDue(bytesReceived: bytes, position: position) {
            try writer.sendAck(position)
            schedule.sent(bytesReceived: bytes, position: position)
        }
    }

    /// The source's bytes on every stream: the ACK cadence counts them all (§14.5).
    private var bytesReceived: UInt64 { reader.wireBytesReceived + (joins?.wireBytesReceived ?? 0) }

    /// Stream 0's position, with every extra stream's in a session of several (§14.5).
    private var currentPosition: StreamPosition {
        var position = reader.position
        position.streamSequences = joins?.positions ?? []
        return position
    }

    /// COMPLETE: every extra stream's STREAM_END applied. A stream lost meanwhile
    /// suspends the session as any loss does, and the wait goes on after the resume.
    private func waitForEveryStream() throws(MigrationFailure) {
        guard let joins else { return }
        while true {
            do throws(MigrationFailure) {
                return try joins.waitUntilAllEnded(isCancelled: { cancellation.isCancelled }, whileWaiting: acknowledgeIfDue)
            } catch {
                guard error.isConnectionLoss else { throw error }
                try resume(after: error)
            }
        }
    }

    /// Version 2: a lost connection suspends the session until its source comes back
    /// on a verified connection (`ResumeAcceptor`) within the reconnect timeout;
    /// anything else, or no source in time, fails as in version 1.
    private func resume(after cause: MigrationFailure) throws(MigrationFailure) {
        guard let acceptor, cause.isConnectionLoss, !cancellation.isCancelled else { throw cancellation.isCancelled ? .cancelled : cause }
        writer.markLost(reader.currentStream)
        reader.suspend()
        events(.connectionLost(reason: "\(cause)"))
        link?.lost(progressNow())
        // Every extra stream closed and drained: its position is final before RESUME_ACCEPT.
        var sequences = try joins?.suspend() ?? []
        let deadline = monotonicSeconds() + options.reconnectTimeoutSeconds
        while let arrival = nextArrival(acceptor, until: deadline) {
            var position = reader.position
            position.streamSequences = sequences
            do {
                try writer.reattach(arrival.stream) { (sent, next) throws(MigrationFailure) in
                    try ResumeCredentials.handshakeFrame(.resumeAccept(ResumeAccept(progress: sent, destinationNextSequence: next, position: position)))
                }
                // Only now: a JOIN that arrives before this RESUME_ACCEPT is from an older round.
                joins?.reopen()
            } catch {
                arrival.stream.close()  // that connection broke too: wait for the next
                acceptor.attachEnded(current: nil)
                sequences = try joins?.suspend() ?? []
                continue
            }
            // The attach step ends once the session reads the new connection and said so.
            defer { acceptor.attachEnded(current: arrival.stream) }
            arrival.stream.readTimeoutSeconds = min(pollSeconds, options.peerTimeoutSeconds)
            arrival.stream.writeTimeoutSeconds = options.peerTimeoutSeconds
            reader.resume(on: arrival.stream, bytes: arrival.bytes)
            if cancellation.attach(arrival.stream) { throw .cancelled }
            acks = AckSchedule(bytesReceived: bytesReceived, position: currentPosition)
            events(.resumed(fromSequence: position.nextSequence, bytesReplayed: 0))
            link?.up()
            return
        }
        if cancellation.isCancelled { throw .cancelled }
        throw .timeout("the connection to the source broke (\(cause)) and it did not come back within --reconnect-timeout \(options.reconnectTimeoutSeconds) s")
    }

    /// The next verified connection; meanwhile a `progress` each second says how long
    /// the source has been away.
    private func nextArrival(_ acceptor: ResumeAcceptor, until deadline: Double) -> ResumeAcceptor.Arrival? {
        while monotonicSeconds() < deadline && !cancellation.isCancelled {
            let slice = min(deadline, monotonicSeconds() + 1)
            if let arrival = acceptor.waitForArrival(until: slice, isCancelled: { cancellation.isCancelled }) { return arrival }
            link?.stillLost()
        }
        return nil
    }

    /// Where the session stands, for `progress` while the source is away.
    private func progressNow() -> Progress {
        let applied = progress.current
        return Progress(phase: state.current.phase, iteration: applied.iterations, rawBytes: applied.rawBytes,
                        wireBytes: reader.wireBytesReceived, bytesPerSecond: 0, pendingBytes: 0, dirtyPages: 0)
    }

    /// The session ended (RESUMED sent, or an ABORT after COMMIT) and the source did
    /// not confirm it got the end: a source that reconnects within the reconnect
    /// timeout is told the outcome, `answer` (§13.8), until one confirms it.
    private func answerOutcome(_ acceptor: ResumeAcceptor, answer: () throws(MigrationFailure) -> [UInt8]) {
        let deadline = monotonicSeconds() + options.reconnectTimeoutSeconds
        while let arrival = acceptor.waitForArrival(until: deadline, isCancelled: { false }) {
            defer { arrival.stream.close(); acceptor.attachEnded(current: nil) }
            guard let bytes = try? answer(), (try? arrival.stream.write(bytes)) != nil else { continue }
            if (try? arrival.stream.shutdownConfirmingPeer()) == true { return }
        }
    }

    private func makePipeline() -> Pipeline {
        ReceivePipeline.make(name: "receive", workers: options.workers, limits: options.limits, devices: devices.devices, memory: memory,
                             writer: writer, pageDecoder: pageDecoder, events: events, progress: progress, state: state,
                             digest: digestAlgorithm)
    }
}

extension LockedValue where Value == DestinationSession.State {
    /// Moves the state forward, never back: the reader and the applier each report
    /// how far they got, and the later one counts.
    func advance(to next: DestinationSession.State) {
        withLock { if next > $0 { $0 = next } }
    }
}
