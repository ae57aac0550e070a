import Foundation
import Logging
import MigrationTLS
import MigrationWire
import VFIODevice

public enum TimeoutAction: String, Sendable, Codable, CaseIterable {
    /// Cancel and roll back: the source keeps running.
    case rollback
    /// Stop iterating and switch over now, whatever the downtime.
    case switchover
}

public struct SenderOptions: Sendable {
    public var compression: CompressionPolicy = .auto
    public var downtimeTargetMs: Double = 300
    public var maxIterations: Int = 30
    /// Pre-copy time budget; nil = none.
    public var timeoutSeconds: Double?
    public var onTimeout: TimeoutAction = .rollback
    public var bandwidthBytesPerSecond: UInt64?
    public var workers: Int = max(ProcessInfo.processInfo.activeProcessorCount, 1)
    /// A peer silent for this long (no frame, no keep-alive) is gone.
    public var peerTimeoutSeconds: Double = 30
    public var limits: WireLimits = .default
    /// Guest pages per PAGES frame.
    public var pagesPerFrame: Int = 256
    /// Device data per DEVICE_DATA frame: a larger chunk is read from the region and
    /// sent in pieces of this size (PROTOCOL.md §5.2), so memory stays bounded by the
    /// pipeline window whatever the driver stages. Capped by `limits`.
    public var devicePieceBytes: Int = 1 << 20
    /// After COMPLETE, how long the destination may take to apply, verify and
    /// answer READY (keep-alives alone do not extend it).
    public var readyTimeoutSeconds: Double = 120
    /// Diagnostics (phases at info, iterations at debug, frames at trace).
    public var logger = Logger(label: "vfio-migrate.source")
    public init() {}
}

/// The source side of one migration: HELLO, pre-copy, stop-and-copy, commit.
/// Any failure before COMMIT puts the devices back to RUNNING.
public final class Sender: @unchecked Sendable {
    private let devices: [SourceDevice]
    private let memory: GuestMemory?
    private let options: SenderOptions
    private let events: EventSink

    private let lock = NSLock()
    private var cancelled = false
    private var committed = false
    private var stream: TLSStream?

    private let counters = Counters()

    public init(devices: [SourceDevice], memory: GuestMemory?, options: SenderOptions, events: @escaping EventSink = { _ in }) {
        self.devices = devices; self.memory = memory; self.options = options
        let logger = options.logger
        self.events = { event in logEvent(event, to: logger); events(event) }
    }

    /// Cancels before COMMIT (clean rollback); ignored once COMMIT is on its way.
    public func cancel() {
        lock.lock()
        guard !committed else { lock.unlock(); return }
        cancelled = true
        let s = stream
        lock.unlock()
        s?.close()
    }

    private var isCancelled: Bool { lock.lock(); defer { lock.unlock() }; return cancelled }

    /// Runs the migration over an authenticated stream. Throws `MigrationError`.
    public func run(stream: TLSStream) throws -> MigrationStats {
        lock.lock(); self.stream = stream; let alreadyCancelled = cancelled; lock.unlock()
        let started = ContinuousClock.now
        var stats = MigrationStats(role: "source")
        stats.devices = devices.map { DeviceStats(name: $0.name) }
        var phase = MigrationPhase.hello
        var leftRunning: [Int] = []          // devices we moved out of RUNNING
        var inbox: PeerInbox?
        var keepAlive: PeriodicTask?
        var pipeline: OrderedPipeline<SendItem, SendOutput>?

        let channel = FrameChannel(stream: stream, peer: .destination, limits: options.limits,
                                   bandwidthBytesPerSecond: options.bandwidthBytesPerSecond)
        stream.readTimeoutSeconds = options.peerTimeoutSeconds
        stream.writeTimeoutSeconds = options.peerTimeoutSeconds

        do {
            if alreadyCancelled { throw MigrationFailureBox(.cancelled) }
            // HELLO: the destination speaks first; we check it before touching a device.
            let theirs = try channel.receive()
            let their: Hello
            switch theirs.body {
            case .hello(let h): their = h
            case .abort(let a): throw MigrationFailureBox(.peerAborted(a.reason, a.message))
            default: throw MigrationFailureBox(.unexpectedFrame("expected HELLO, got \(theirs.body.name)"))
            }
            let pageSize = memory?.pageSize ?? 4096
            var mine = Hello(sessionID: their.sessionID, role: .source,
                             encodings: options.compression == .none ? [.raw] : [.raw, .deflate],
                             devices: HelloCheck.descriptors(names: devices.map(\.name), compat: devices.map(\.compatibility), pageSize: pageSize),
                             memory: HelloCheck.memoryRanges(memory))
            mine.version = Hello.currentVersion
            if let reason = HelloCheck.mismatch(source: mine, destination: their) {
                // §2.5: close_notify after the ABORT, so a reset cannot destroy it.
                if (try? channel.send(.abort(Abort(reason: .incompatible, message: reason)))) != nil { try? stream.shutdown() }
                throw MigrationError(phase: .hello, failure: .incompatible(reason), disposition: .notStarted)
            }
            try channel.send(.hello(mine))
            channel.constrainInbound(memory: [], deviceCount: devices.count)
            events(.helloAccepted(devices: devices.map(\.name), memoryBytes: memory?.size ?? 0, security: stream.security))

            inbox = PeerInbox(channel: channel) { frame in
                switch frame.body { case .resumed, .abort: return true; default: return false }
            }
            keepAlive = startKeepAlive(channel: channel, peerTimeoutSeconds: options.peerTimeoutSeconds)

            // Pre-copy: RUNNING → SAVING|RUNNING.
            phase = .precopy
            events(.phase(.precopy))
            for (i, d) in devices.enumerated() {
                do {
                    try d.device.setState([.saving, .running])
                    leftRunning.append(i)
                    try d.dirtyPages?.start()
                } catch { throw MigrationFailureBox(classify(error), device: d.name) }
            }

            let workPipeline = makePipeline(channel: channel)
            pipeline = workPipeline
            // A destination that aborts (or vanishes) while this thread waits for room in a
            // full pipeline must not have to wait for our blocked writer to time out.
            inbox?.onProblem { workPipeline.interruptSubmit($0) }
            var digests = devices.map { _ in SHA256Digest() }
            var sequences = devices.map { SaveSequence(device: $0.device) }
            var iterationStart = ContinuousClock.now
            var iterationStartBytes = counters.rawProduced
            var iteration = 0
            var converged = true
            while true {
                try checkHealth(inbox: inbox, pipeline: workPipeline)
                // Device data: at most what was pending when the pass began, so a
                // device that keeps producing cannot hold the iteration forever.
                for i in devices.indices {
                    let budget = try deviceCall(i) { try devices[i].device.pendingBytes() }
                    var sent: UInt64 = 0
                    while sent < budget {
                        guard let chunk = try deviceCall(i, { try sequences[i].stageChunk() }) else { break }
                        sent += chunk.size
                        try send(chunk, of: sequences[i], device: i, phase: .precopy, digest: digests[i], stats: &stats, to: workPipeline, inbox: inbox)
                    }
                }
                // Guest pages: all of them first, then what the devices dirtied.
                var dirtyPages: UInt64 = 0
                if let memory {
                    if iteration == 0 {
                        dirtyPages = memory.pageCount
                        try submitPages(startPFN: 0, count: memory.pageCount, to: workPipeline, inbox: inbox)
                    } else {
                        dirtyPages = try sendDirtyPages(memory: memory, to: workPipeline, inbox: inbox)
                    }
                }
                var pending: UInt64 = 0
                for i in devices.indices { pending += try deviceCall(i) { try devices[i].device.pendingBytes() } }
                try workPipeline.submit(.control(.iterationEnd(IterationEnd(iteration: UInt32(iteration), pendingBytes: pending, dirtyPages: dirtyPages)), device: 0))
                iteration += 1

                // The rate of this iteration, not the average since the start: the
                // first pass is full of zero pages that cost nothing, and would make
                // the dirty pages of the last pass look cheaper than they are.
                let now = ContinuousClock.now
                let produced = counters.rawProduced
                let rate = max(Double(produced - iterationStartBytes) / max((now - iterationStart).seconds, 0.05), 1)
                iterationStart = now
                iterationStartBytes = produced
                let remaining = Double(pending) + Double(dirtyPages) * Double(memory?.pageSize ?? 0)
                let estimateMs = remaining / rate * 1000
                events(.iterationEnd(iteration: iteration, pendingBytes: pending, dirtyPages: dirtyPages, estimatedDowntimeMs: estimateMs))
                emitProgress(.precopy, iteration: iteration, pending: pending, dirty: dirtyPages, channel: channel, rate: rate, remaining: remaining)

                if iteration > 1 && estimateMs <= options.downtimeTargetMs {
                    events(.switchover(reason: "estimated downtime \(Int(estimateMs)) ms ≤ target \(Int(options.downtimeTargetMs)) ms"))
                    break
                }
                if iteration >= options.maxIterations {
                    converged = false
                    events(.switchover(reason: "reached --max-iterations \(options.maxIterations); estimated downtime \(Int(estimateMs)) ms"))
                    break
                }
                if let timeout = options.timeoutSeconds, (ContinuousClock.now - started).seconds >= timeout {
                    switch options.onTimeout {
                    case .rollback: throw MigrationFailureBox(.timeout("pre-copy exceeded --timeout \(timeout) s"))
                    case .switchover:
                        converged = false
                        events(.switchover(reason: "--timeout \(timeout) s reached; switching over"))
                    }
                    break
                }
            }
            stats.iterations = iteration
            stats.converged = converged

            // Stop-and-copy: SAVING (stopped), drain until pending_bytes == 0.
            phase = .stopcopy
            events(.phase(.stopcopy))
            let stopped = ContinuousClock.now
            // v2 devices offering P2P: all quiesced before any stops (docs/DEVICE.md); nothing for v1.
            for (i, d) in devices.enumerated() {
                try deviceCall(i) { try d.device.quiesceP2P() }
            }
            for (i, d) in devices.enumerated() {
                try deviceCall(i) { try d.device.setState([.saving]) }
            }
            for i in devices.indices {
                while let chunk = try deviceCall(i, { try sequences[i].stageChunk() }) {
                    try send(chunk, of: sequences[i], device: i, phase: .stopcopy, digest: digests[i], stats: &stats, to: workPipeline, inbox: inbox)
                }
            }
            if let memory { _ = try sendDirtyPages(memory: memory, to: workPipeline, inbox: inbox) }
            for i in devices.indices {
                let digest = digests[i].finalize()
                stats.devices[i].sha256 = hex(digest)
                try workPipeline.submit(.control(.deviceEnd(DeviceEnd(totalBytes: stats.devices[i].bytes, chunkCount: stats.devices[i].chunks, sha256: digest)), device: UInt32(i)))
                events(.deviceEnd(device: devices[i].name, bytes: stats.devices[i].bytes, chunks: stats.devices[i].chunks))
            }
            digests = []
            try workPipeline.submit(.control(.complete, device: 0))
            try workPipeline.finish()
            pipeline = nil
            emitProgress(.stopcopy, iteration: iteration, pending: 0, dirty: 0, channel: channel, rate: 0, remaining: 0)

            // Wait for READY: the destination has applied and verified everything.
            phase = .ready
            events(.phase(.ready))
            let ready = try inbox!.next(deadlineSeconds: options.readyTimeoutSeconds, waitingFor: "READY from the destination")
            switch ready.body {
            case .ready: break
            case .abort(let a): throw MigrationFailureBox(.peerAborted(a.reason, a.message))
            default: throw MigrationFailureBox(.unexpectedFrame("expected READY, got \(ready.body.name)"))
            }

            // COMMIT: from here on the source never runs the devices again.
            lock.lock()
            if cancelled { lock.unlock(); throw MigrationFailureBox(.cancelled) }
            committed = true
            lock.unlock()
            phase = .commit
            events(.phase(.commit))
            do {
                try channel.send(.commit)
                let resumed = try inbox!.next()
                switch resumed.body {
                case .resumed: break
                case .abort(let a): throw MigrationFailureBox(.peerAborted(a.reason, a.message))
                default: throw MigrationFailureBox(.unexpectedFrame("expected RESUMED, got \(resumed.body.name)"))
                }
            } catch {
                keepAlive?.stop()
                stream.close()
                throw MigrationError(phase: .commit, failure: classify(error), disposition: .afterCommit)
            }
            stats.downtimeMs = (ContinuousClock.now - stopped).milliseconds
            keepAlive?.stop()
            inbox?.join()
            for d in devices {
                try? d.dirtyPages?.stop()
                try? d.device.setState([])     // SAVING → STOPPED: the VM now runs on the destination
            }
            try? stream.shutdown()
            stream.close()
            stats.totalSeconds = (ContinuousClock.now - started).seconds
            stats.rawBytes = counters.rawProduced
            stats.wireBytes = channel.wireBytesSent
            stats.pagesSent = counters.pages
            stats.zeroPages = counters.zeroPages
            (stats.bitmapsNone, stats.bitmapsAll, stats.bitmapsPartial) = counters.bitmapCounts
            stats.deviceBytes = stats.devices.reduce(0) { $0 + $1.bytes }
            events(.phase(.done))
            events(.finished(stats))
            return stats
        } catch let error as MigrationError where error.disposition != .rolledBack {
            keepAlive?.stop()
            pipeline?.abort(error)
            stream.close()
            throw error
        } catch {
            // A write blocked on a destination that stopped reading gives up within 2 s
            // (not the peer timeout it started with), so the ABORT is not held back.
            stream.writeTimeoutSeconds = 2
            // Roll back first: the VM must run again on the source as soon as possible.
            var failure = classify(error)
            var device = (error as? MigrationFailureBox)?.device
            if isCancelled { failure = .cancelled; device = nil }
            var rollbackProblems: [String] = []
            for i in leftRunning.reversed() {
                do { try devices[i].device.setState([.running]) } catch {
                    rollbackProblems.append("\(devices[i].name): \(error)")
                }
                try? devices[i].dirtyPages?.stop()
            }
            if let problem = inbox?.pendingProblem(), case .peerAborted = classify(problem), !isCancelled {
                failure = classify(problem)
            }
            pipeline?.abort(error)
            keepAlive?.stop()
            // §5.7: an ABORT is never answered with one. §2.5: close_notify, then read until
            // the destination closes (bounded), so the ABORT is not lost to a reset.
            if failure.isPeerAbort || (try? channel.send(.abort(Abort(reason: failure.abortReason, message: "source, phase \(phase)\(device.map { ", device \($0)" } ?? ""): \(failure)")))) != nil {
                try? stream.shutdown()
            }
            stream.close()
            options.logger.notice("migration failed", metadata: ["phase": "\(phase)", "device": "\(device ?? "-")", "cause": "\(failure)", "rolled_back": "\(leftRunning.map { devices[$0].name })"])
            let disposition: FailureDisposition = !rollbackProblems.isEmpty ? .rollbackFailed
                : (leftRunning.isEmpty && phase == .hello ? .notStarted : .rolledBack)
            throw MigrationError(phase: phase, device: device, failure: failure,
                                 disposition: disposition,
                                 rollbackFailure: rollbackProblems.isEmpty ? nil : rollbackProblems.joined(separator: "; "))
        }
    }

    // MARK: - pieces

    private func deviceCall<T>(_ index: Int, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as MigrationFailureBox { throw e } catch {
            throw MigrationFailureBox(classify(error), device: devices[index].name)
        }
    }

    /// Step d of one staged chunk, piece by piece into the pipeline: one `whole`
    /// frame when it fits a piece, else a `first` piece and continuations. At most
    /// one piece is in this function's hands; the pipeline window bounds the rest.
    private func send(_ chunk: StagedChunk, of sequence: SaveSequence, device i: Int, phase: Phase, digest: SHA256Digest,
                      stats: inout MigrationStats, to pipeline: OrderedPipeline<SendItem, SendOutput>, inbox: PeerInbox?) throws {
        let pieceSize = UInt64(devicePieceBytes)
        var offset: UInt64 = 0
        repeat {
            let count = Int(min(pieceSize, chunk.size - offset))
            let bytes = try deviceCall(i) { try sequence.read(chunk, at: offset, count: count) }
            let part: ChunkPart = chunk.size <= pieceSize ? .whole : (offset == 0 ? .first(chunkLength: chunk.size) : .next)
            digest.update(bytes)
            counters.addProduced(UInt64(count))
            try pipeline.submit(.chunk(device: UInt32(i), phase: phase, part: part, bytes: bytes))
            offset += UInt64(count)
            try checkHealth(inbox: inbox, pipeline: pipeline)
        } while offset < chunk.size
        stats.devices[i].bytes += chunk.size
        stats.devices[i].chunks += 1
        if phase == .precopy { stats.devices[i].precopyBytes += chunk.size } else { stats.devices[i].stopcopyBytes += chunk.size }
    }

    /// The piece size actually used: the option, within what the receiver's limits
    /// accept in one frame (raw data after the 16-byte `first` prefix; deflate
    /// output is never larger, the compressor sends raw when it does not pay).
    private var devicePieceBytes: Int {
        max(1, min(options.devicePieceBytes, options.limits.maxInflated, options.limits.maxPayload - 16))
    }

    private func checkHealth(inbox: PeerInbox?, pipeline: OrderedPipeline<SendItem, SendOutput>) throws {
        if isCancelled { throw MigrationFailureBox(.cancelled) }
        if let problem = inbox?.pendingProblem() { throw problem }
        if let problem = pipeline.error { throw problem }
    }

    private func submitPages(startPFN: UInt64, count: UInt64, to pipeline: OrderedPipeline<SendItem, SendOutput>, inbox: PeerInbox?) throws {
        var pfn = startPFN
        let end = startPFN + count
        let batch = UInt64(options.pagesPerFrame)
        while pfn < end {
            let n = min(batch, end - pfn)
            try pipeline.submit(.pages(startPFN: pfn, count: Int(n)))
            counters.addProduced(n * UInt64(memory!.pageSize))
            pfn += n
            try checkHealth(inbox: inbox, pipeline: pipeline)
        }
    }

    /// Each device's dirty pages, asked for window by window: a DIRTY_BITMAP frame
    /// per reported segment (never more PFNs than the receiver accepts in one
    /// frame), then the dirtied pages, walked run by run out of the bitmap.
    /// Memory is one window's answer, whatever the size of the guest.
    private func sendDirtyPages(memory: GuestMemory, to pipeline: OrderedPipeline<SendItem, SendOutput>, inbox: PeerInbox?) throws -> UInt64 {
        var total: UInt64 = 0
        let window = DirtyWindow.pfns(for: options.limits)
        for (i, d) in devices.enumerated() {
            guard let source = d.dirtyPages else { continue }
            var start: UInt64 = 0
            while start < memory.pageCount {
                let count = min(window, memory.pageCount - start)
                let segments = try deviceCall(i) { try source.query(startPFN: start, pageSize: UInt64(memory.pageSize), totalPFNs: count) }
                // A source answers inside the window; split anyway so no frame can exceed the limit.
                for segment in segments.flatMap({ $0.split(maxPFNs: window) }) {
                    total += try send(segment, device: i, to: pipeline, inbox: inbox)
                }
                start += count
            }
        }
        return total
    }

    /// One DIRTY_BITMAP frame and the pages it reports dirty; returns their count.
    private func send(_ segment: DirtySegment, device i: Int, to pipeline: OrderedPipeline<SendItem, SendOutput>, inbox: PeerInbox?) throws -> UInt64 {
        let copied: DirtyCopied
        switch segment.pages {
        case .none: copied = .none; counters.addBitmap(none: 1)
        case .all: copied = .all; counters.addBitmap(all: 1)
        case .bitmap(let bits): copied = .bitmap(bits); counters.addBitmap(partial: 1)
        }
        try pipeline.submit(.control(.dirtyBitmap(DirtyBitmap(startPFN: segment.startPFN, pageSize: segment.pageSize, totalPFNs: segment.pfnCount, copied: copied)), device: UInt32(i)))
        var pages: UInt64 = 0
        for run in segment.dirtyRuns {
            pages += run.count
            try submitPages(startPFN: run.startPFN, count: run.count, to: pipeline, inbox: inbox)
        }
        return pages
    }

    private func emitProgress(_ phase: MigrationPhase, iteration: Int, pending: UInt64, dirty: UInt64, channel: FrameChannel, rate: Double, remaining: Double) {
        events(.progress(Progress(phase: phase, iteration: iteration, rawBytes: counters.rawProduced,
                                  wireBytes: channel.wireBytesSent, bytesPerSecond: rate,
                                  pendingBytes: pending, dirtyPages: dirty,
                                  etaSeconds: rate > 0 ? remaining / rate : nil)))
    }

    private func makePipeline(channel: FrameChannel) -> OrderedPipeline<SendItem, SendOutput> {
        let policy = options.compression
        let memory = self.memory
        let counters = self.counters
        return OrderedPipeline(
            name: "send", workers: options.workers, window: options.workers * 4 + 4,
            makeTransform: {
                let compressor = try PayloadCompressor(policy: policy)
                return { item in try SendItem.encode(item, compressor: compressor, memory: memory, counters: counters) }
            },
            consume: { output in
                try channel.send(batch: output.frames)
            })
    }
}

/// How many PFNs one dirty-bitmap query (and so one DIRTY_BITMAP frame) covers:
/// the receiver's `maxPFNsPerFrame`, and no more than a bitmap that fits its
/// `maxPayload`; a multiple of 8 so bitmaps split on byte boundaries.
enum DirtyWindow {
    static func pfns(for limits: WireLimits) -> UInt64 {
        let byPayload = UInt64(max(limits.maxPayload - DirtyBitmap.headerSize, 1)) * 8
        return max(min(limits.maxPFNsPerFrame, byPayload) / 8 * 8, 8)
    }
}

/// What the sender's producer hands to the compression workers.
enum SendItem: Sendable {
    case chunk(device: UInt32, phase: Phase, part: ChunkPart, bytes: [UInt8])
    /// Read and encode these guest pages in the worker.
    case pages(startPFN: UInt64, count: Int)
    case control(FrameBody, device: UInt32)

    static func encode(_ item: SendItem, compressor: PayloadCompressor, memory: GuestMemory?, counters: Counters) throws -> SendOutput {
        switch item {
        case .chunk(let device, let phase, let part, let bytes):
            guard let length = UInt32(exactly: bytes.count) else {
                throw WireError.sizeNotRepresentable(what: "DEVICE_DATA piece", bytes: UInt64(bytes.count), limit: UInt64(UInt32.max))
            }
            let (encoding, payload) = try compressor.encode(bytes)
            return SendOutput(frames: [(.deviceData(DeviceData(phase: phase, encoding: encoding, originalLength: length, payload: payload, part: part)), device)])
        case .pages(let start, let count):
            let memory = memory!
            let bytes = try memory.readPages(startPFN: start, count: count)
            let segments = try compressor.encodePages(startPFN: start, pageSize: memory.pageSize, bytes: bytes)
            var zero: UInt64 = 0
            for s in segments where s.encoding == .zero { zero += UInt64(s.pageCount) }
            counters.addPages(UInt64(count), zero: zero)
            return SendOutput(frames: [(.pages(Pages(pageSize: UInt32(memory.pageSize), segments: segments)), 0)])
        case .control(let body, let device):
            return SendOutput(frames: [(body, device)])
        }
    }
}

struct SendOutput: Sendable {
    var frames: [(FrameBody, UInt32)]
}

/// Byte and page counters shared by the producer and the workers.
final class Counters: @unchecked Sendable {
    private let lock = NSLock()
    private var produced: UInt64 = 0
    private var pageCount: UInt64 = 0
    private var zeroCount: UInt64 = 0
    func addProduced(_ n: UInt64) { lock.lock(); produced += n; lock.unlock() }
    private var bitmaps = (none: 0, all: 0, partial: 0)
    func addPages(_ n: UInt64, zero: UInt64) { lock.lock(); pageCount += n; zeroCount += zero; lock.unlock() }
    func addBitmap(none: Int = 0, all: Int = 0, partial: Int = 0) {
        lock.lock(); bitmaps.none += none; bitmaps.all += all; bitmaps.partial += partial; lock.unlock()
    }
    var bitmapCounts: (none: Int, all: Int, partial: Int) { lock.lock(); defer { lock.unlock() }; return bitmaps }
    var rawProduced: UInt64 { lock.lock(); defer { lock.unlock() }; return produced }
    var pages: UInt64 { lock.lock(); defer { lock.unlock() }; return pageCount }
    var zeroPages: UInt64 { lock.lock(); defer { lock.unlock() }; return zeroCount }
}

extension FrameBody {
    /// The frame type's name as in docs/PROTOCOL.md.
    var name: String {
        switch self {
        case .hello: return "HELLO"
        case .deviceData: return "DEVICE_DATA"
        case .dirtyBitmap: return "DIRTY_BITMAP"
        case .pages: return "PAGES"
        case .iterationEnd: return "ITERATION_END"
        case .deviceEnd: return "DEVICE_END"
        case .complete: return "COMPLETE"
        case .ready: return "READY"
        case .commit: return "COMMIT"
        case .resumed: return "RESUMED"
        case .abort: return "ABORT"
        case .keepAlive: return "KEEPALIVE"
        }
    }
}
