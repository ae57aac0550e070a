import Foundation
import MigrationTLS
import MigrationWire
import SyncPrimitives
import VFIODevice

/// One migration from the source's side, as an explicit state machine:
/// hello → precopy(iteration) → stopCopy → awaitingReady → committed → done, or
/// failed from any of them. One method per phase; a failure's phase and disposition
/// (the exit code) are read from the state it happened in.
final class SourceSession {
    enum State {
        case hello
        case precopy(iteration: Int)
        case stopCopy
        case awaitingReady
        case committed
        case done
        case failed

        var phase: MigrationPhase {
            switch self {
            case .hello: return .hello
            case .precopy: return .precopy
            case .stopCopy: return .stopcopy
            case .awaitingReady: return .ready
            case .committed: return .commit
            case .done, .failed: return .done
            }
        }

        /// What a failure in this state leaves behind, i.e. the exit code (unless the
        /// rollback itself fails).
        var disposition: FailureDisposition {
            switch self {
            case .hello: return .notStarted
            case .committed, .done, .failed: return .afterCommit
            case .precopy, .stopCopy, .awaitingReady: return .rolledBack
            }
        }
    }
    typealias Pipeline = OrderedPipeline<SendItem, SendOutput, MigrationFailure>

    private(set) var state = State.hello
    private var devices: SourceDeviceSet
    private let memory: GuestMemory?
    private let options: SenderOptions
    private let events: EventSink
    private let cancellation: Cancellation
    private let cancelledBeforeStart: Bool
    /// The session's first connection (a resumed session writes on `writer.stream`).
    private let stream: TLSStream
    private let writer: FrameWriter
    /// Version 2: how to reach the destination again; nil = a lost connection fails.
    private let reconnect: Reconnect?
    private let bandwidth: BandwidthLimiter
    private let runtime: RuntimeControl
    private let counters = Counters()
    private let started = ContinuousClock.now
    private var stats = MigrationStats(role: "source")
    private var inbox: PeerInbox?
    /// Version 2 with a way to reconnect: what the reader thread runs on a loss.
    private var recovery: SourceReconnect?
    /// Settled by the HELLO exchange (whether the destination accepts zstd).
    private var encoding: SendEncoding
    /// Version 2 with resumption: the connection's state and outage clock in `progress`.
    private var link: LinkProgress?
    private var keepAlive: PeriodicTask?
    private var pipeline: Pipeline?
    /// Version 3 with several streams (§14): the extra streams and their pipelines (stream k at k − 1).
    private var streams: SourceStreams?
    private var extraPipelines: [Pipeline] = []
    /// Version 6 (§17): what each stream's destination holds, by stream index; empty without page copies.
    private var pageCopyTables: [PageCopyTable] = []
    private var sequences: [SaveSequence]
    private var digests: [DeviceDigest]
    private var stoppedAt = ContinuousClock.now
    /// The model's estimate at the iteration that ended pre-copy, for the stats.
    private var estimatedDowntimeMs: Double?
    /// The downtime target in force when pre-copy ended (it may have been `set`).
    private var finalDowntimeTargetMs: Double
    /// The guest throttle this session asked the VMM for (0 = none): lifted at the end.
    private var throttledPercent = 0
    /// `stop-guest` was asked (answered or not): a rollback must ask to resume,
    /// since a VMM that answered late may have paused the vCPUs anyway.
    private var guestStopRequested = false

    init(devices: [SourceDevice], memory: GuestMemory?, options: SenderOptions, events: @escaping EventSink,
         stream: TLSStream, reconnect: Reconnect?, bandwidth: BandwidthLimiter, runtime: RuntimeControl, cancellation: Cancellation, cancelledBeforeStart: Bool) {
        self.reconnect = reconnect
        self.devices = SourceDeviceSet(devices)
        self.memory = memory; self.options = options; self.events = events
        self.stream = stream; self.cancellation = cancellation; self.cancelledBeforeStart = cancelledBeforeStart
        self.bandwidth = bandwidth
        self.runtime = runtime
        finalDowntimeTargetMs = options.downtimeTargetMs
        encoding = SendEncoding(policy: options.compression, destinationAccepts: [], workers: options.workers)
        writer = FrameWriter(stream: stream, limiter: bandwidth)
        stats.devices = devices.map { DeviceStats(name: $0.name) }
        sequences = devices.map { SaveSequence(device: $0.device) }
        digests = []  // the session's algorithm once the HELLOs are exchanged; nothing is hashed before
        stream.readTimeoutSeconds = options.peerTimeoutSeconds
        stream.writeTimeoutSeconds = options.peerTimeoutSeconds
    }

    func run() throws(MigrationError) -> MigrationStats {
        do throws(MigrationFailure) {
            if cancelledBeforeStart { throw .cancelled }
            let parameters = try options.convergenceParameters()
            let version = try ResumeSettings.negotiated(stream, offered: options.applicationProtocols)
            let reader = FrameReader(stream: stream, peer: .destination, limits: options.limits, version: version)
            let exchange = HelloExchange(names: devices.devices.map(\.name), compatibility: devices.devices.map(\.compatibility), memory: memory)
            // Extra streams are new connections: without a way to open them, one stream.
            // Version 4: a zstd lane per compressing thread (§15.2), up to the destination's and our own cap.
            // Copies need the ACKs of a resumable session (§17.4): without a way to reconnect, none are listed.
            let encodings = options.helloEncodings.filter { $0 != .pageCopies || (reconnect != nil && options.reconnectTimeoutSeconds > 0) }
            let (theirs, mine) = try exchange.asSource(reader: reader, writer: writer, encodings: encodings, version: version,
                                                       streams: reconnect == nil ? 1 : options.streams, blockPages: options.pagesPerFrame,
                                                       lanes: min(options.workers, SendEncoding.maxLanesPerSession))
            encoding = SendEncoding(policy: options.compression, destinationAccepts: theirs.encodings, workers: options.workers,
                                    lanes: mine.encodings.contains(.zstdLanes) ? Int(mine.streams?.lanes ?? 0) : 0,
                                    transport: { [writer] in writer.stream.tcpInfo })
            let digest = DeviceDigestAlgorithm(sessionEncodings: mine.encodings)
            digests = devices.devices.map { _ in DeviceDigest(digest) }
            events(.helloAccepted(devices: devices.devices.map(\.name), memoryBytes: memory?.size ?? 0, security: stream.security,
                                  streams: Int(mine.streams?.count ?? 1), zstdLanes: encoding.lanes, deviceDigest: digest))
            // Resumption first: the extra streams retain (and may be lost) from their first frame on.
            let credentials = try enableResumption(version, sessionID: theirs.sessionID)
            streams = try openStreams(mine, credentials: credentials)
            reader.sessionStreams = streams?.routing.count ?? 1
            if credentials != nil, mine.encodings.contains(.pageCopies) { enablePageCopies() }
            recovery = credentials.map(makeRecovery)
            if version >= .v2 {
                let (writer, extras) = (self.writer, recovery?.extras)
                reader.onAck = { (position: StreamPosition) throws(MigrationFailure) in
                    try writer.acknowledge(position)
                    try extras?.acknowledge(position.streamSequences)
                }
            }
            // From here on the destination's frames are read on a thread of their own.
            inbox = PeerInbox(reader: reader, recovery: recovery) { frame in
                switch frame.body { case .resumed, .abort: return true; default: return false }
            }
            keepAlive = startKeepAlive(writer: writer, peerTimeoutSeconds: options.peerTimeoutSeconds)
            try precopy(parameters)
            try stopAndCopy()
            try awaitReady()
            try commit()
            return finish()
        } catch {
            throw fail(error)
        }
    }

    /// Version 2 with a way to reconnect (PROTOCOL.md §13): the resume secret, and
    /// stream 0 retains from its next frame on. nil: the session does not resume.
    private func enableResumption(_ version: ProtocolVersion, sessionID: [UInt8]) throws(MigrationFailure) -> ResumeCredentials? {
        guard version >= .v2, reconnect != nil, options.reconnectTimeoutSeconds > 0 else { return nil }
        guard options.resumeWindowBytes >= options.minimumResumeWindowBytes else {
            throw .configuration("the resume window of \(options.resumeWindowBytes) bytes is below the minimum of \(options.minimumResumeWindowBytes)")
        }
        let credentials = try ResumeCredentials(firstConnection: stream, sessionID: sessionID)
        writer.enableResumption(policy: .waitForReplay, window: options.resumeWindowBytes, deviceCount: devices.devices.count)
        return credentials
    }

    /// Version 6 (§17): a table per stream (a copy names a page of its own stream), the
    /// default capacity shared among them, each stream's writer feeding its own.
    private func enablePageCopies() {
        let writers = [writer] + (streams?.extras.map(\.writer) ?? [])
        var capacity = PageCopyTable.defaultCapacity
        while capacity > 1 << 12 && capacity * writers.count > PageCopyTable.defaultCapacity { capacity >>= 1 }
        let fingerprinter = PageFingerprinter.random()
        pageCopyTables = writers.map { _ in PageCopyTable(capacity: capacity, fingerprinter: fingerprinter) }
        for (writer, table) in zip(writers, pageCopyTables) { writer.enablePageCopies(table) }
    }

    /// A batch for `stream`: in a session with page copies its pages stop being sources
    /// before it is handed out (`PageCopyTable.invalidate`).
    private func pageItem(stream: Int, startPFN: UInt64, count: UInt64) -> SendItem {
        let generation = pageCopyTables.isEmpty ? nil : pageCopyTables[stream].invalidate(startPFN: startPFN, count: Int(count))
        return .pages(startPFN: startPFN, count: Int(count), copyGeneration: generation)
    }

    /// The reconnection the reader thread runs on a loss (§13.5; with several streams, §14.5).
    private func makeRecovery(_ credentials: ResumeCredentials) -> SourceReconnect {
        let link = LinkProgress(phase: .precopy, events: events)
        self.link = link
        guard let reconnect else { preconditionFailure("resumption without a way to reconnect") }
        return SourceReconnect(credentials: credentials, writer: writer, connect: reconnect, options: options, memory: memory,
                               events: events, link: link, cancellation: cancellation, extras: streams?.links)
    }

    /// Version 3 with more than one stream (which needs resumption, §14.1): opens and
    /// joins streams 1..<count (§14.3), each retaining from its first frame; an extra
    /// stream's failed write closes stream 0, whose reader thread then resumes the session.
    private func openStreams(_ mine: Hello, credentials: ResumeCredentials?) throws(MigrationFailure) -> SourceStreams? {
        guard let offer = mine.streams, offer.count > 1, let reconnect else { return nil }
        guard let credentials else { throw .configuration("several streams need session resumption (--reconnect-timeout > 0)") }
        let retention = SourceStreams.Retention(window: options.resumeWindowBytes, onLost: { [writer] in writer.markLost(writer.stream) },
                                                firstConnection: stream)
        return try SourceStreams(routing: StreamRouting(offer), connect: reconnect, credentials: credentials, options: options,
                                 bandwidth: bandwidth, retention: retention)
    }

    // MARK: - phases

    /// RUNNING → SAVING|RUNNING, then passes until the convergence model says to
    /// switch over (or, under `--on-stall`, to roll back), the iteration limit or the
    /// time budget.
    private func precopy(_ parameters: ConvergenceParameters) throws(MigrationFailure) {
        state = .precopy(iteration: 0)
        events(.phase(.precopy))
        // Refused here, before any device leaves RUNNING: nothing to roll back.
        try startGuestDirtyLog()
        try devices.startSaving()
        let loggingSince = ContinuousClock.now
        let perStream = max(1, options.workers / ((streams?.extras.count ?? 0) + 1))
        let pipeline = makePipeline(writer: writer, workers: streams == nil ? options.workers : perStream, stream: .first, index: 0)
        self.pipeline = pipeline
        // Only stream 0's writer feeds `auto`'s drain measurement (it has one consumer).
        extraPipelines = streams?.extras.map { makePipeline(writer: $0.writer, workers: perStream, stream: .extra, index: $0.index) } ?? []
        // A destination that aborts (or vanishes) while this thread waits for room in a
        // full pipeline must not have to wait for our blocked writer to time out.
        let all = [pipeline] + extraPipelines
        inbox?.onProblem { problem in for p in all { p.interruptSubmit(problem) } }
        let policy = ConvergencePolicy(onStall: options.onStall, controllerAttached: options.guestThrottle != nil)
        var convergence = PrecopyConvergence(parameters: parameters, policy: policy, start: mark(), loggingSince: loggingSince)
        var iteration = 0
        var done = false
        while !done {
            state = .precopy(iteration: iteration)
            convergence.beginIteration(mark())
            let pass = try precopyPass(iteration)
            let live = runtime.current
            convergence.setDowntimeTarget(ms: live.downtimeTargetMs)
            let (figures, action) = convergence.endIteration(pass, isFullPass: iteration == 0, end: mark(),
                                                             pageSize: UInt64(memory?.pageSize ?? 4096), bandwidthLimit: bandwidth.bytesPerSecond)
            iteration += 1
            stats.iterations = iteration
            report(pass, figures)
            done = try shouldSwitchOver(after: iteration, figures, action, live)
        }
        finalDowntimeTargetMs = runtime.beginSwitchover().downtimeTargetMs
        estimatedDowntimeMs = convergence.latest?.estimatedDowntimeMs
    }

    /// SAVING (stopped), drain every device until pending_bytes == 0, the last dirty
    /// pages, DEVICE_END per device, COMPLETE; then wait until all of it is written.
    private func stopAndCopy() throws(MigrationFailure) {
        state = .stopCopy
        events(.phase(.stopcopy))
        // Downtime starts when the guest is asked to stop: the handshake is part of it.
        stoppedAt = .now
        link?.devicesStopped()
        try stopGuest()
        try devices.stop()
        for i in devices.indices { try sendDeviceData(i, phase: .stopcopy) }
        if let memory { _ = try sendDirtyPages(memory) }
        try endExtraStreams()
        for i in devices.indices {
            let digest = digests[i].finalize()
            let device = stats.devices[i]
            stats.devices[i].record(digest: digest, digests[i].algorithm)
            try submit(.control(.deviceEnd(DeviceEnd(totalBytes: device.bytes, chunkCount: device.chunks, sha256: digest)), device: UInt32(i)))
            events(.deviceEnd(device: devices[i].name, bytes: device.bytes, chunks: device.chunks))
        }
        digests = []
        try submit(.control(.complete, device: 0))
        try pipeline?.finish()
        pipeline = nil
        emitProgress(.stopcopy, pending: 0, dirtyPages: 0, rate: 0, remaining: 0)
    }

    /// READY: the destination has applied and verified everything.
    private func awaitReady() throws(MigrationFailure) {
        state = .awaitingReady
        events(.phase(.ready))
        try expect(.ready, deadlineSeconds: options.readyTimeoutSeconds, waitingFor: "READY from the destination")
    }

    /// COMMIT: from here on the source never runs the devices again.
    private func commit() throws(MigrationFailure) {
        guard cancellation.commit() else { throw .cancelled }
        state = .committed
        events(.phase(.commit))
        try writer.send(.commit)
        try expect(.resumed)
    }

    private func finish() -> MigrationStats {
        stats.downtimeMs = (ContinuousClock.now - stoppedAt).milliseconds
        stats.downtimeComparison = estimatedDowntimeMs.map {
            DowntimeComparison(estimatedMs: $0, measuredMs: stats.downtimeMs, targetMs: finalDowntimeTargetMs)
        }
        liftThrottle()
        keepAlive?.stop()
        inbox?.join()
        devices.release()
        let stream = writer.stream
        try? stream.shutdown()
        stream.close()
        streams?.shutDown()
        state = .done
        let totals = counters.current
        stats.totalSeconds = (ContinuousClock.now - started).seconds
        stats.rawBytes = totals.produced
        stats.wireBytes = wireBytesSent
        stats.pagesSent = totals.pages
        stats.zeroPages = totals.zeroPages
        stats.copiedPages = totals.copiedPages
        (stats.bitmapsNone, stats.bitmapsAll, stats.bitmapsPartial) = (totals.bitmapsNone, totals.bitmapsAll, totals.bitmapsPartial)
        stats.deviceBytes = stats.devices.reduce(0) { $0 + $1.bytes }
        events(.phase(.done))
        events(.finished(stats))
        return stats
    }

    // MARK: - failure

    private func fail(_ cause: MigrationFailure) -> MigrationError {
        let reached = state
        defer { state = .failed }
        // Writers waiting for a reconnection give up now (the threads below are joined).
        writer.abandonResumption(cause)
        streams?.links.abandon(cause)
        if reached.disposition == .afterCommit { return failAfterCommit(cause) }
        // A write blocked on a destination that stopped reading gives up within 2 s
        // (not the peer timeout it started with), so the ABORT is not held back.
        writer.stream.writeTimeoutSeconds = 2
        // Roll back first: the VM must run again on the source as soon as possible.
        let rollbackProblems = devices.rollBack()
        // The vCPUs after the devices: a guest must not run against a stopped device.
        if guestStopRequested { options.guestControl?.resumeGuest() }
        liftThrottle()
        let failure = settled(cause)
        pipeline?.abort(failure)
        for p in extraPipelines { p.abort(failure) }
        streams?.close(failure)
        keepAlive?.stop()
        // A refused HELLO tells the destination the mismatch in its own words (§5.1).
        var message = failure.abortMessage(side: "source", phase: reached.phase)
        if case .hello = reached, case .incompatible(let reason) = failure { message = reason }
        let sent = writer.endWithAbort(failure, message: message)
        // The connection was gone (a cancel closes it) but the destination still holds
        // the session: tell it on a resuming connection rather than let it wait out
        // its reconnect timeout. Not when reconnecting itself is what failed.
        if !sent, !failure.isPeerAbort, let recovery, cancellation.isCancelled || inbox?.pendingProblem() == nil {
            recovery.deliverAbort(Abort(reason: failure.abortReason, message: message))
        }
        let rolledBack = devices.leftRunning.map { devices[$0].name }
        options.logger.notice("migration failed", metadata: ["phase": "\(reached.phase)", "device": "\(failure.device ?? "-")",
                                                             "cause": "\(failure)", "rolled_back": "\(rolledBack)"])
        return MigrationError(phase: reached.phase, device: failure.device, failure: failure,
                              disposition: rollbackProblems.isEmpty ? reached.disposition : .rollbackFailed,
                              rollbackFailure: rollbackProblems.isEmpty ? nil : rollbackProblems.joined(separator: "; "))
    }

    /// What ended the session: the operator's cancel beats the error it caused (it
    /// closed the stream), and a destination's ABORT beats the broken pipe or timeout
    /// it caused here.
    private func settled(_ cause: MigrationFailure) -> MigrationFailure {
        if cancellation.isCancelled { return .cancelled }
        if let problem = inbox?.pendingProblem(), problem.isPeerAbort { return problem }
        return cause
    }

    /// COMMIT was sent: the devices stay stopped whatever happens (no split brain), and
    /// an operator must decide (exit 3).
    private func failAfterCommit(_ cause: MigrationFailure) -> MigrationError {
        liftThrottle()
        streams?.close(cause)
        keepAlive?.stop()
        // The destination's ABORT arrived: say so with close_notify (a version-2
        // destination would otherwise keep the outcome for a source that lost it).
        if cause.isPeerAbort { try? writer.stream.shutdown() }
        writer.stream.close()
        // The destination's own ABORT is a definite outcome (exit 5); anything else
        // leaves the destination unknown (exit 3).
        let disposition: FailureDisposition = cause.isPeerAbort ? .destinationFailed : state.disposition
        return MigrationError(phase: state.phase, device: cause.device, failure: cause, disposition: disposition)
    }

    // MARK: - pre-copy passes

    private func precopyPass(_ iteration: Int) throws(MigrationFailure) -> PrecopyPass {
        try checkHealth()
        // Device data: at most what was pending when the pass began, so a
        // device that keeps producing cannot hold the iteration forever.
        var read: UInt64 = 0
        for i in devices.indices { read += try sendDeviceData(i, phase: .precopy, budget: pendingBytes(i)) }
        // Guest pages: all of them first, then what the devices dirtied.
        var dirtyPages: UInt64 = 0
        var logReadAt: ContinuousClock.Instant?
        if let memory {
            if iteration == 0 {
                dirtyPages = memory.pageCount
                try submitPages(startPFN: 0, count: memory.pageCount)
            } else {
                logReadAt = .now
                dirtyPages = try sendDirtyPages(memory)
            }
        }
        var pending: UInt64 = 0
        for i in devices.indices { pending += try pendingBytes(i) }
        try submit(.control(.iterationEnd(IterationEnd(iteration: UInt32(iteration), pendingBytes: pending, dirtyPages: dirtyPages)), device: 0))
        return PrecopyPass(pending: pending, dirtyPages: dirtyPages, deviceBytesRead: read, dirtyLogReadAt: logReadAt)
    }

    /// The iteration's events: the figures behind the estimate (the transfer rate is
    /// this iteration's, not the average since the start: the first pass is full of
    /// zero pages that cost nothing, and would make the last dirty pages look cheap).
    private func report(_ pass: PrecopyPass, _ figures: ConvergenceFigures) {
        events(.iterationEnd(iteration: figures.iteration, pendingBytes: pass.pending, dirtyPages: pass.dirtyPages,
                             estimatedDowntimeMs: figures.estimatedDowntimeMs, convergence: figures))
        emitProgress(.precopy, pending: pass.pending, dirtyPages: pass.dirtyPages, rate: figures.transferRawBytesPerSecond,
                     remaining: Double(figures.remainingBytes), convergence: figures)
    }

    /// Decides after an iteration: switch over (true), or another pass (false). The
    /// model's verdict under `--on-stall` first; then the controller's `switchover`;
    /// then the hard bounds, in this order: `--max-iterations` (as last `set`),
    /// `--timeout`. Throws to roll back.
    private func shouldSwitchOver(after iteration: Int, _ figures: ConvergenceFigures,
                                  _ action: ConvergenceAction, _ live: RuntimeParameters) throws(MigrationFailure) -> Bool {
        if try act(on: action, figures) { return true }
        if live.switchoverRequested {
            if figures.verdict != .switchover { stats.converged = false }
            events(.switchover(reason: "switchover requested by the controller; estimated downtime \(Int(figures.estimatedDowntimeMs)) ms"))
            return true
        }
        if iteration >= live.maxIterations {
            stats.converged = false
            events(.switchover(reason: "reached --max-iterations \(live.maxIterations); estimated downtime \(Int(figures.estimatedDowntimeMs)) ms"))
            return true
        }
        guard let timeout = options.timeoutSeconds, (ContinuousClock.now - started).seconds >= timeout else { return false }
        switch options.onTimeout {
        case .rollback: throw .timeout("pre-copy exceeded --timeout \(timeout) s")
        case .switchover:
            stats.converged = false
            events(.switchover(reason: "--timeout \(timeout) s reached; switching over"))
            return true
        }
    }

    /// Carries out the model's action; true = switch over now.
    private func act(on action: ConvergenceAction, _ figures: ConvergenceFigures) throws(MigrationFailure) -> Bool {
        switch action {
        case .keepIterating:
            return false
        case .switchOver(let reason):
            // Switching over on a stall is today's end state reached early: the
            // downtime will exceed the target, so it did not converge.
            if figures.verdict != .switchover { stats.converged = false }
            events(.switchover(reason: reason))
            return true
        case .rollBack(let reason):
            // Before stop-and-copy: the failure path sets the devices RUNNING again (exit 2).
            throw .notConverged(iterations: figures.iteration, reason: reason)
        case .throttle(let percent, let reason):
            return throttleGuest(percent, reason)
        }
    }

    /// Asks the VMM to slow the guest and keeps iterating (false); when it refuses,
    /// switches over as without a controller (true).
    private func throttleGuest(_ percent: Int, _ reason: String) -> Bool {
        do {
            try options.guestThrottle?.throttleGuest(percent: percent)
        } catch {
            stats.converged = false
            events(.switchover(reason: "\(reason); the VMM refused the throttle (\(error)): switching over"))
            return true
        }
        throttledPercent = percent
        options.logger.notice("\(reason)")
        return false
    }

    /// The throttle ladder never steps down by itself: whatever ends the session
    /// gives the guest its CPU back.
    private func liftThrottle() {
        guard throttledPercent > 0, let throttle = options.guestThrottle else { return }
        throttledPercent = 0
        do { try throttle.throttleGuest(percent: 0) } catch {
            options.logger.warning("could not lift the guest throttle: \(error)")
        }
    }

    /// The VMM pauses the vCPUs before the devices stop and the last dirty round is
    /// read; without a controller nothing is asked.
    private func stopGuest() throws(MigrationFailure) {
        guard let control = options.guestControl else { return }
        guestStopRequested = true
        do { try control.stopGuest() } catch {
            throw .guestNotStopped("\(error); the guest keeps running on the source")
        }
    }

    // MARK: - pieces

    /// The byte counters now, all from one snapshot (in flight = produced − written).
    private func mark() -> TransferMark {
        let totals = counters.current
        return TransferMark(produced: totals.produced, rawWritten: totals.written, wireBytes: wireBytesSent)
    }

    /// Every stream's bytes on the wire.
    private var wireBytesSent: UInt64 { writer.wireBytesSent + (streams?.wireBytesSent ?? 0) }

    /// The destination's next frame, which must be `expected`; its ABORT ends the session.
    private func expect(_ expected: FrameBody, deadlineSeconds: Double? = nil, waitingFor: String = "the peer") throws(MigrationFailure) {
        guard let inbox else { preconditionFailure("no peer reader before HELLO") }
        let frame = try inbox.next(deadlineSeconds: deadlineSeconds, waitingFor: waitingFor)
        switch frame.body {
        case expected: return
        case .abort(let a): throw .peerAborted(a.reason, a.message)
        default: throw .unexpectedFrame("expected \(expected.name), got \(frame.body.name)")
        }
    }

    private func checkHealth() throws(MigrationFailure) {
        if cancellation.isCancelled { throw .cancelled }
        if let problem = inbox?.pendingProblem() { throw problem }
        if let problem = pipeline?.error { throw problem }
        for p in extraPipelines { if let problem = p.error { throw problem } }
    }

    private func submit(_ item: SendItem) throws(MigrationFailure) {
        guard let pipeline else { preconditionFailure("no pipeline outside pre-copy and stop-and-copy") }
        try pipeline.submit(item)
    }

    private func pendingBytes(_ i: Int) throws(MigrationFailure) -> UInt64 {
        try deviceCall(devices[i].name) { () throws(DeviceError) in try devices[i].device.pendingBytes() }
    }

    /// Device `i`'s staged chunks, up to `budget` bytes (stop-and-copy: until none is
    /// left); returns the bytes read.
    @discardableResult
    private func sendDeviceData(_ i: Int, phase: Phase, budget: UInt64 = .max) throws(MigrationFailure) -> UInt64 {
        var sent: UInt64 = 0
        while sent < budget, let chunk = try deviceCall(devices[i].name, { () throws(DeviceError) in try sequences[i].stageChunk() }) {
            sent += chunk.size
            try send(chunk, device: i, phase: phase)
        }
        return sent
    }

    /// Step d of one staged chunk, piece by piece into the pipeline: one `whole`
    /// frame when it fits a piece, else a `first` piece and continuations. At most
    /// one piece is in this function's hands; the pipeline window bounds the rest.
    private func send(_ chunk: StagedChunk, device i: Int, phase: Phase) throws(MigrationFailure) {
        let pieceSize = UInt64(options.effectivePieceBytes)
        var offset: UInt64 = 0
        repeat {
            let count = Int(min(pieceSize, chunk.size - offset))
            // Version 2: device data cannot be read twice; read no more than the window can
            // keep, counting the pieces still in the pipeline (the room is reserved until numbered).
            try writer.waitForRoom(count + FrameDecoder.headerSize + 16)
            let bytes = try deviceCall(devices[i].name) { [offset] () throws(DeviceError) in try sequences[i].read(chunk, at: offset, count: count) }
            let part: ChunkPart = chunk.size <= pieceSize ? .whole : (offset == 0 ? .first(chunkLength: chunk.size) : .next)
            digests[i].update(bytes)
            counters.addProduced(UInt64(count))
            try submit(.chunk(device: UInt32(i), phase: phase, part: part, bytes: bytes))
            offset += UInt64(count)
            try checkHealth()
        } while offset < chunk.size
        stats.devices[i].bytes += chunk.size
        stats.devices[i].chunks += 1
        if phase == .precopy { stats.devices[i].precopyBytes += chunk.size } else { stats.devices[i].stopcopyBytes += chunk.size }
    }

    private func submitPages(startPFN: UInt64, count: UInt64) throws(MigrationFailure) {
        var pfn = startPFN
        let end = startPFN + count
        let batch = UInt64(options.pagesPerFrame)
        while pfn < end {
            let n = min(batch, end - pfn)
            try submitPageBatch(startPFN: pfn, count: n)
            counters.addProduced(n * UInt64(memory!.pageSize))
            pfn += n
            try checkHealth()
        }
    }

    /// One batch of pages, to the stream(s) that own its PFNs (§14.4): every copy of a
    /// page goes through the same stream's pipeline, in order, so the last one wins.
    private func submitPageBatch(startPFN: UInt64, count: UInt64) throws(MigrationFailure) {
        guard let streams else { return try submit(pageItem(stream: 0, startPFN: startPFN, count: count)) }
        for piece in streams.routing.pieces(start: startPFN, pages: count) {
            let item = pageItem(stream: piece.stream, startPFN: piece.start, count: piece.pages)
            if piece.stream == 0 { try submit(item) } else { try extraPipelines[piece.stream - 1].submit(item) }
        }
    }

    /// Stop-and-copy, after the last pages: each extra stream's pages written, then its
    /// STREAM_END (the destination applies them all before READY, §14.4).
    private func endExtraStreams() throws(MigrationFailure) {
        guard let streams else { return }
        for (extra, pipeline) in zip(streams.extras, extraPipelines) {
            try pipeline.finish()
            try streams.end(extra)
        }
        extraPipelines = []
    }

    /// Each device's dirty pages, asked for window by window: a DIRTY_BITMAP frame
    /// per reported segment (never more PFNs than the receiver accepts in one
    /// frame), then the dirtied pages, walked run by run out of the bitmap.
    /// Memory is one window's answer, whatever the size of the guest.
    private func sendDirtyPages(_ memory: GuestMemory) throws(MigrationFailure) -> UInt64 {
        var total: UInt64 = 0
        let window = DirtyWindow.pfns(for: options.limits)
        for i in devices.indices {
            guard let source = devices[i].dirtyPages else { continue }
            var start: UInt64 = 0
            while start < memory.pageCount {
                let count = min(window, memory.pageCount - start)
                let segments = try deviceCall(devices[i].name) { [start] () throws(DeviceError) in
                    try source.query(startPFN: start, pageSize: UInt64(memory.pageSize), totalPFNs: count)
                }
                // A source answers inside the window; split anyway so no frame can exceed the limit.
                for segment in segments.flatMap({ $0.split(maxPFNs: window) }) {
                    total += try send(segment, device: i)
                }
                start += count
            }
        }
        total += try sendGuestDirtyPages(memory, window: window)
        return total
    }

    private func startGuestDirtyLog() throws(MigrationFailure) {
        guard let log = options.guestDirtyLog else { return }
        guard let memory else { throw .guestDirtyLog("there is no guest memory to track (--memory)") }
        do { try log.start(pageSize: UInt64(memory.pageSize), pageCount: memory.pageCount) } catch {
            throw .guestDirtyLog(error.reason)
        }
    }

    /// The guest's dirty pages: one sync, then the snapshot cut into the same
    /// windows as the devices'. Its DIRTY_BITMAP frames are tagged device 0 (the
    /// receiver treats them as informational). A page also dirty in a device's
    /// report is sent again: the later copy carries the same or newer bytes and
    /// the pipeline keeps order, so the destination ends with the latest.
    private func sendGuestDirtyPages(_ memory: GuestMemory, window: UInt64) throws(MigrationFailure) -> UInt64 {
        guard let log = options.guestDirtyLog else { return 0 }
        let snapshot: GuestDirtySnapshot
        do { snapshot = try log.sync() } catch { throw .guestDirtyLog(error.reason) }
        var total: UInt64 = 0
        var start: UInt64 = 0
        while start < memory.pageCount {
            let count = min(window, memory.pageCount - start)
            total += try send(snapshot.segment(startPFN: start, count: count, pageSize: UInt64(memory.pageSize)), device: 0)
            start += count
        }
        return total
    }

    /// One DIRTY_BITMAP frame and the pages it reports dirty; returns their count.
    private func send(_ segment: DirtySegment, device i: Int) throws(MigrationFailure) -> UInt64 {
        let copied: DirtyCopied
        switch segment.pages {
        case .none: copied = .none; counters.addBitmap(none: 1)
        case .all: copied = .all; counters.addBitmap(all: 1)
        case .bitmap(let bits): copied = .bitmap(bits); counters.addBitmap(partial: 1)
        }
        try submit(.control(.dirtyBitmap(DirtyBitmap(startPFN: segment.startPFN, pageSize: segment.pageSize, totalPFNs: segment.pfnCount, copied: copied)), device: UInt32(i)))
        var pages: UInt64 = 0
        for run in segment.dirtyRuns {
            pages += run.count
            try submitPages(startPFN: run.startPFN, count: run.count)
        }
        return pages
    }

    private func emitProgress(_ phase: MigrationPhase, pending: UInt64, dirtyPages: UInt64, rate: Double, remaining: Double,
                              convergence: ConvergenceFigures? = nil) {
        let progress = Progress(phase: phase, iteration: stats.iterations, rawBytes: counters.rawProduced,
                                wireBytes: wireBytesSent, bytesPerSecond: rate,
                                pendingBytes: pending, dirtyPages: dirtyPages,
                                etaSeconds: rate > 0 ? remaining / rate : nil, convergence: convergence,
                                encoding: encoding.adaptive?.report)
        events(.progress(link?.annotate(progress) ?? progress))
    }

    /// Which stream a send pipeline feeds: stream 0's alone measures the drain for
    /// `auto` (it has one consumer); an extra stream's waits for room in its window
    /// (§14.5; stream 0's PAGES need none, §13.3: device reads reserve it ahead of them).
    private enum PipelineStream { case first, extra }

    private func makePipeline(writer: FrameWriter, workers: Int, stream: PipelineStream, index streamIndex: Int) -> Pipeline {
        let (encoding, memory, counters) = (self.encoding, self.memory, self.counters)
        let copyTable = pageCopyTables.isEmpty ? nil : pageCopyTables[streamIndex]
        // Each worker's index: the first `encoding.lanes` compress into a zstd lane of this stream (§15.3).
        let nextWorker = LockedValue(0)
        return Pipeline(
            name: "send", workers: workers, window: workers * 4 + 4,
            makeTransform: { () throws(MigrationFailure) -> Pipeline.Transform in
                let compressor = try encoding.makeCompressor()
                let lane = try encoding.makeLane(index: nextWorker.withLock { i in defer { i += 1 }; return i }, stream: streamIndex, workers: workers)
                return { (item: SendItem) throws(MigrationFailure) -> SendOutput in
                    try item.encode(compressor: compressor, encoding: encoding, memory: memory, counters: counters, lane: lane, copies: copyTable)
                }
            },
            makeInPlaceConsumer: { { (output: inout SendOutput) throws(MigrationFailure) in
                // The time a write takes (waiting for room included) is the link's drain rate for `auto`.
                // A lane frame is retained as its bytes (§15.4): it waits for that room; an extra
                // stream's other frames for their entry's.
                if output.retainsBytes {
                    try writer.waitForRetainedRoom(output.frame.bytes.count)
                } else if stream == .extra {
                    try writer.waitForEntryRoom()
                }
                let (before, started, cpu) = (writer.wireBytesSent, ContinuousClock.now, threadCPUTime())
                try writer.send(prepared: &output.frame, memory: memory, sent: output.sentPages)
                if stream == .first { encoding.adaptive?.recordDrain(bytes: writer.wireBytesSent - before, started: started, ended: .now, cpu: threadCPUTime() - cpu,
                                               input: output.rawBytes, coded: output.coded, kind: output.kind) }
                counters.addWritten(output.rawBytes)
            } })
    }
}
