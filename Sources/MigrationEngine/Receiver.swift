import Foundation
import Logging
import MigrationTLS
import MigrationWire
import VFIODevice

public struct ReceiverOptions: Sendable {
    public var workers: Int = max(ProcessInfo.processInfo.activeProcessorCount, 1)
    public var peerTimeoutSeconds: Double = 30
    public var limits: WireLimits = .default
    public var encodings: [Encoding] = [.raw, .deflate]
    /// Diagnostics (phases at info, frames at trace).
    public var logger = Logger(label: "vfio-migrate.destination")
    public init() {}
}

/// The destination side of one migration: checks the source's HELLO, puts the
/// devices in RESUMING, applies device chunks and pages in received order,
/// verifies each device's digest, answers READY, and resumes only on COMMIT.
public final class Receiver: @unchecked Sendable {
    private let devices: [DestinationDevice]
    private let memory: GuestMemory?
    private let options: ReceiverOptions
    private let events: EventSink
    private let lock = NSLock()
    private var cancelled = false
    private var stream: TLSStream?

    public init(devices: [DestinationDevice], memory: GuestMemory?, options: ReceiverOptions, events: @escaping EventSink = { _ in }) {
        self.devices = devices; self.memory = memory; self.options = options
        let logger = options.logger
        self.events = { event in logEvent(event, to: logger); events(event) }
    }

    /// Abandons the session (before COMMIT the devices stay stopped).
    public func cancel() {
        lock.lock(); cancelled = true; let s = stream; lock.unlock()
        s?.close()
    }

    public func run(stream: TLSStream) throws -> MigrationStats {
        lock.lock(); self.stream = stream; lock.unlock()
        let started = ContinuousClock.now
        var stats = MigrationStats(role: "destination")
        var phase = MigrationPhase.hello
        var touched = false
        var received = MigrationPhase.precopy   // the latest phase seen in the source's frames
        var keepAlive: PeriodicTask?
        var pipeline: OrderedPipeline<Frame, Applicable>?
        let channel = FrameChannel(stream: stream, peer: .source, limits: options.limits)
        stream.readTimeoutSeconds = options.peerTimeoutSeconds
        stream.writeTimeoutSeconds = options.peerTimeoutSeconds
        let applier = Applier(devices: devices, memory: memory, channel: channel, events: events)

        do {
            var sessionID = [UInt8](repeating: 0, count: 16)
            for i in sessionID.indices { sessionID[i] = UInt8.random(in: 0...255) }
            let pageSize = memory?.pageSize ?? 4096
            let mine = Hello(sessionID: sessionID, role: .destination, encodings: options.encodings,
                             devices: HelloCheck.descriptors(names: devices.map(\.name), compat: devices.map(\.compatibility), pageSize: pageSize),
                             memory: HelloCheck.memoryRanges(memory))
            try channel.send(.hello(mine))
            let first = try channel.receive()
            let theirs: Hello
            switch first.body {
            case .hello(let h): theirs = h
            case .abort(let a): throw MigrationError(phase: .hello, failure: .peerAborted(a.reason, a.message), disposition: .notStarted)
            default: throw MigrationFailureBox(.unexpectedFrame("expected HELLO, got \(first.body.name)"))
            }
            if let reason = HelloCheck.mismatch(source: theirs, destination: mine) {
                throw MigrationError(phase: .hello, failure: .incompatible(reason), disposition: .notStarted)
            }
            // PFNs are checked against what the source announced (it lies inside ours).
            channel.constrainInbound(memory: theirs.memory, deviceCount: devices.count)
            events(.helloAccepted(devices: devices.map(\.name), memoryBytes: memory?.size ?? 0, security: stream.security))
            keepAlive = startKeepAlive(channel: channel, peerTimeoutSeconds: options.peerTimeoutSeconds)

            phase = .precopy
            events(.phase(.precopy))
            for (i, d) in devices.enumerated() {
                touched = true
                do { try d.device.setState([.resuming]) } catch {
                    throw MigrationFailureBox(classify(error), device: devices[i].name)
                }
            }
            applier.start()

            let limits = options.limits
            let applyPipeline = OrderedPipeline<Frame, Applicable>(
                name: "receive", workers: options.workers, window: options.workers * 4 + 4,
                makeTransform: {
                    let decompressor = try PayloadDecompressor(limits: limits)
                    return { frame in try Applicable.decode(frame, decompressor: decompressor) }
                },
                consume: { item in try applier.apply(item) })
            pipeline = applyPipeline

            // Read until COMMIT; everything before it goes through the ordered applier.
            // Short reads: an applier or decompression failure is acted on at once, even
            // while the source only sends keep-alives (which `receive` swallows).
            stream.readTimeoutSeconds = min(Self.pollSeconds, options.peerTimeoutSeconds)
            while true {
                if isCancelled { throw MigrationFailureBox(.cancelled) }
                if let e = applyPipeline.error { throw e }
                let frame = try receive(channel, failingWith: applyPipeline)
                switch frame.body {
                case .commit:
                    try applyPipeline.finish()
                    pipeline = nil
                case .abort(let a):
                    throw MigrationFailureBox(.peerAborted(a.reason, a.message))
                case .deviceData(let d) where d.phase == .stopcopy:
                    applier.noteStopCopy()
                    if received == .precopy { received = .stopcopy }
                    try applyPipeline.submit(frame)
                    continue
                default:
                    if case .complete = frame.body { received = .complete }
                    try applyPipeline.submit(frame)
                    phase = applier.phase
                    continue
                }
                break
            }
            guard applier.readySent else {
                throw MigrationFailureBox(.unexpectedFrame("COMMIT arrived before this side sent READY"))
            }

            // COMMIT: resume. A failure here is after commit: an operator must act.
            phase = .resume
            events(.phase(.resume))
            for d in devices {
                do { try d.device.setState([.running]) } catch {
                    keepAlive?.stop()
                    try? channel.send(.abort(Abort(reason: .deviceError, message: "destination: device \(d.name) failed to resume: \(error)")))
                    stream.close()
                    throw MigrationError(phase: .resume, device: d.name, failure: classify(error), disposition: .afterCommit)
                }
            }
            stats.downtimeMs = applier.stopCopyStarted.map { (ContinuousClock.now - $0).milliseconds } ?? 0
            try channel.send(.resumed)
            keepAlive?.stop()
            // §2.5: after RESUMED both ends send close_notify at once and read until the
            // other's; neither waits for the other to go first.
            try? stream.shutdown()
            stream.close()

            stats.totalSeconds = (ContinuousClock.now - started).seconds
            stats.wireBytes = channel.wireBytesReceived
            stats.iterations = applier.iterations
            stats.rawBytes = applier.rawBytes
            stats.pagesSent = applier.pages
            stats.zeroPages = applier.zeroPages
            stats.devices = applier.deviceStats
            stats.deviceBytes = stats.devices.reduce(0) { $0 + $1.bytes }
            events(.phase(.done))
            events(.finished(stats))
            return stats
        } catch {
            var failure = classify(error)
            var device = (error as? MigrationFailureBox)?.device
            var disposition = (error as? MigrationError)?.disposition ?? (touched ? .rolledBack : .notStarted)
            if let e = error as? MigrationError { phase = e.phase; device = e.device }
            // The applier runs ahead of the reader's last look: a destination that has
            // verified everything and sent READY must not say it failed in pre-copy.
            else if touched {
                for later in [received, applier.phase] where Self.order.firstIndex(of: later)! > Self.order.firstIndex(of: phase) ?? 0 {
                    phase = later
                }
            }
            if isCancelled { failure = .cancelled; device = nil }
            if disposition == .afterCommit { throw error }
            if let e = pipeline?.error, (error as? MigrationFailureBox).map({ if case .peerClosed = $0.failure { return true } else { return false } }) ?? false {
                failure = classify(e)   // the applier's reason beats the broken pipe it caused
            }
            // A READY or keep-alive blocked on a source that stopped reading must not hold
            // the ABORT back for the whole peer timeout.
            stream.writeTimeoutSeconds = 2
            pipeline?.abort(error)
            // Never RUNNING without COMMIT: abandon the resume, leave the devices stopped.
            if touched {
                for d in devices { try? d.device.setState([]) }
            }
            keepAlive?.stop()
            // §5.7: an ABORT is never answered with one; either way close_notify, then read
            // until the source closes (bounded): closing with its data unread would reset
            // the connection and could destroy the ABORT (§2.5).
            if failure.isPeerAbort || (try? channel.send(.abort(Abort(reason: failure.abortReason, message: "destination, phase \(phase)\(device.map { ", device \($0)" } ?? ""): \(failure)")))) != nil {
                try? stream.shutdown()
            }
            stream.close()
            if phase == .hello && !touched { disposition = .notStarted }
            options.logger.notice("migration failed", metadata: ["phase": "\(phase)", "device": "\(device ?? "-")", "cause": "\(failure)"])
            throw MigrationError(phase: phase, device: device, failure: failure, disposition: disposition)
        }
    }

    private var isCancelled: Bool { lock.lock(); defer { lock.unlock() }; return cancelled }

    private static let pollSeconds = 0.2

    /// The next frame. Throws the pipeline's error as soon as it fails, and a read
    /// timeout only after `peerTimeoutSeconds` without a byte (keep-alives count).
    private func receive(_ channel: FrameChannel, failingWith pipeline: OrderedPipeline<Frame, Applicable>) throws -> Frame {
        var seen = channel.wireBytesReceived
        var lastByte = ContinuousClock.now
        while true {
            if let e = pipeline.error { throw e }
            if isCancelled { throw MigrationFailureBox(.cancelled) }
            do { return try channel.receive() } catch let e as TLSError {
                guard case .readTimeout = e else { throw e }
                if channel.wireBytesReceived != seen {
                    seen = channel.wireBytesReceived; lastByte = .now
                } else if (ContinuousClock.now - lastByte).seconds >= options.peerTimeoutSeconds {
                    throw TLSError.readTimeout(seconds: options.peerTimeoutSeconds)
                }
            }
        }
    }
    private static let order: [MigrationPhase] = [.precopy, .stopcopy, .complete, .ready]
}

extension MigrationFailure {
    var isPeerAbort: Bool { if case .peerAborted = self { return true } else { return false } }
}

/// A frame after the worker's decoding: payloads inflated and checked.
enum Applicable: Sendable {
    case chunk(device: Int, phase: Phase, part: ChunkPart, bytes: [UInt8])
    case pages([PageWrite])
    case control(Frame)

    struct PageWrite: Sendable {
        var startPFN: UInt64
        var count: Int
        /// nil: zero pages.
        var bytes: [UInt8]?
    }

    static func decode(_ frame: Frame, decompressor: PayloadDecompressor) throws -> Applicable {
        switch frame.body {
        case .deviceData(let d):
            return .chunk(device: Int(frame.device), phase: d.phase, part: d.part, bytes: try decompressor.decode(d))
        case .pages(let p):
            var writes: [PageWrite] = []
            writes.reserveCapacity(p.segments.count)
            for s in p.segments {
                if s.encoding == .zero {
                    writes.append(PageWrite(startPFN: s.startPFN, count: Int(s.pageCount), bytes: nil))
                } else {
                    writes.append(PageWrite(startPFN: s.startPFN, count: Int(s.pageCount), bytes: try decompressor.decode(s, pageSize: Int(p.pageSize))))
                }
            }
            return .pages(writes)
        default:
            return .control(frame)
        }
    }
}

/// Applies decoded frames in order on the destination (runs on one thread).
final class Applier: @unchecked Sendable {
    private let devices: [DestinationDevice]
    private let memory: GuestMemory?
    private let channel: FrameChannel
    private let events: EventSink
    private let lock = NSLock()
    private var sequences: [ResumeSequence] = []
    private var digests: [SHA256Digest] = []
    private var ended: [Bool] = []
    private var stats: [DeviceStats] = []
    private var _readySent = false
    private var _phase = MigrationPhase.precopy
    private var _iterations = 0
    private var _raw: UInt64 = 0
    private var _pages: UInt64 = 0
    private var _zero: UInt64 = 0
    private var _stopCopyStarted: ContinuousClock.Instant?

    init(devices: [DestinationDevice], memory: GuestMemory?, channel: FrameChannel, events: @escaping EventSink) {
        self.devices = devices; self.memory = memory; self.channel = channel; self.events = events
    }

    func start() {
        sequences = devices.map { ResumeSequence(device: $0.device) }
        digests = devices.map { _ in SHA256Digest() }
        ended = devices.map { _ in false }
        stats = devices.map { DeviceStats(name: $0.name) }
    }

    private func locked<T>(_ body: () -> T) -> T { lock.lock(); defer { lock.unlock() }; return body() }
    var readySent: Bool { locked { _readySent } }
    var phase: MigrationPhase { locked { _phase } }
    var iterations: Int { locked { _iterations } }
    var rawBytes: UInt64 { locked { _raw } }
    var pages: UInt64 { locked { _pages } }
    var zeroPages: UInt64 { locked { _zero } }
    var deviceStats: [DeviceStats] { locked { stats } }
    var stopCopyStarted: ContinuousClock.Instant? { locked { _stopCopyStarted } }
    func noteStopCopy() { locked { if _stopCopyStarted == nil { _stopCopyStarted = .now } } }

    /// One frame's bytes through the resume sequence; a chunk in pieces is begun at
    /// its first piece (which checks it fits) and finished with its last. The decoder
    /// has already enforced the order of pieces. Returns whether a chunk completed.
    private func write(_ bytes: [UInt8], part: ChunkPart, device i: Int) throws -> Bool {
        switch part {
        case .whole:
            try sequences[i].apply(bytes)
            return true
        case .first(let length):
            try sequences[i].begin(length: length)
            try sequences[i].write(bytes)
        case .next:
            try sequences[i].write(bytes)
        }
        guard sequences[i].missingBytes == 0 else { return false }
        try sequences[i].finish()
        return true
    }

    func apply(_ item: Applicable) throws {
        switch item {
        case .chunk(let i, let phase, let part, let bytes):
            let completed: Bool
            do { completed = try write(bytes, part: part, device: i) } catch {
                throw MigrationFailureBox(classify(error), device: devices[i].name)
            }
            digests[i].update(bytes)
            locked {
                stats[i].bytes += UInt64(bytes.count)
                if completed { stats[i].chunks += 1 }
                if phase == .precopy { stats[i].precopyBytes += UInt64(bytes.count) } else {
                    stats[i].stopcopyBytes += UInt64(bytes.count); _phase = .stopcopy
                }
                _raw += UInt64(bytes.count)
            }
        case .pages(let writes):
            guard let memory else { throw MigrationFailureBox(.unexpectedFrame("PAGES without announced guest memory")) }
            var n: UInt64 = 0, z: UInt64 = 0
            for w in writes {
                if let bytes = w.bytes { try memory.writePages(startPFN: w.startPFN, bytes: bytes) } else {
                    try memory.zeroPages(startPFN: w.startPFN, count: w.count); z += UInt64(w.count)
                }
                n += UInt64(w.count)
            }
            let raw = n * UInt64(memory.pageSize)
            locked { _pages += n; _zero += z; _raw += raw }
        case .control(let frame):
            switch frame.body {
            case .iterationEnd(let it):
                locked { _iterations = Int(it.iteration) + 1 }
            case .deviceEnd(let end):
                let i = Int(frame.device)
                let name = devices[i].name
                let s = locked { stats[i] }
                if end.chunkCount != s.chunks {
                    throw MigrationFailureBox(.lengthMismatch(device: name, field: "chunk count", expected: end.chunkCount, actual: s.chunks), device: name)
                }
                if end.totalBytes != s.bytes {
                    throw MigrationFailureBox(.lengthMismatch(device: name, field: "byte count", expected: end.totalBytes, actual: s.bytes), device: name)
                }
                let digest = digests[i].finalize()
                if digest != end.sha256 {
                    throw MigrationFailureBox(.digestMismatch(device: name, expected: end.sha256, actual: digest), device: name)
                }
                locked { ended[i] = true; stats[i].sha256 = hex(digest) }
                events(.deviceEnd(device: name, bytes: s.bytes, chunks: s.chunks))
            case .complete:
                if let missing = locked({ ended.firstIndex(of: false) }) {
                    throw MigrationFailureBox(.unexpectedFrame("COMPLETE before DEVICE_END of \(devices[missing].name)"), device: devices[missing].name)
                }
                // v2 devices leave RESUMING for STOP here, before READY: the driver validates
                // the stream at that arc, so a refusal is an ABORT the source rolls back
                // from, not a failure after COMMIT. Nothing for v1 (docs/DEVICE.md).
                for (i, d) in devices.enumerated() {
                    do { try d.device.finishResuming() } catch { throw MigrationFailureBox(classify(error), device: devices[i].name) }
                }
                // No msync here: MAP_SHARED writes are already visible to the VMM that maps
                // the same file; forcing them to disk is not migration's job and would add
                // the write-back of the whole guest to the downtime.
                locked { _phase = .ready }
                try channel.send(.ready)
                locked { _readySent = true }
                events(.phase(.ready))
            case .dirtyBitmap:
                break  // informational: the pages that follow carry the data
            default:
                throw MigrationFailureBox(.unexpectedFrame("\(frame.body.name) in the data stream"))
            }
        }
    }
}
