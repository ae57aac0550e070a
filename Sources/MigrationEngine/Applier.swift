import MigrationWire
import SyncPrimitives
import VFIODevice

/// What the applier has done so far, read by the destination session's thread.
struct ApplyProgress: Sendable {
    var devices: [DeviceStats]
    var iterations = 0
    var rawBytes: UInt64 = 0
    var pages: UInt64 = 0
    var zeroPages: UInt64 = 0
    var readySent = false
    /// When the first stop-and-copy frame arrived (the destination's downtime starts).
    var stopCopyStarted: ContinuousClock.Instant?
}

/// Applies decoded frames in stream order on the destination: device chunks through
/// their resume sequences, pages into guest memory, digests checked at DEVICE_END,
/// READY after COMPLETE. Lives on the pipeline's consumer thread only.
final class Applier {
    private let devices: [DestinationDevice]
    private let memory: GuestMemory?
    private let writer: FrameWriter
    /// Decodes page segments straight into guest memory: the stream's, kept across
    /// its connections (zstd lanes continue after a resume, §15.4).
    private let pageDecoder: PageDecoderSlot
    private let events: EventSink
    private let progress: LockedValue<ApplyProgress>
    private let state: LockedValue<DestinationSession.State>
    private var sequences: [ResumeSequence]
    private let digests: [DeviceDigest]
    private var ended: [Bool]

    init(devices: [DestinationDevice], memory: GuestMemory?, writer: FrameWriter, pageDecoder: PageDecoderSlot, events: @escaping EventSink,
         progress: LockedValue<ApplyProgress>, state: LockedValue<DestinationSession.State>, digest: DeviceDigestAlgorithm) {
        self.devices = devices; self.memory = memory; self.writer = writer; self.pageDecoder = pageDecoder; self.events = events
        self.progress = progress; self.state = state
        sequences = devices.map { ResumeSequence(device: $0.device) }
        digests = devices.map { _ in DeviceDigest(digest) }
        ended = devices.map { _ in false }
    }

    func apply(_ item: DecodedFrame) throws(MigrationFailure) {
        switch item {
        case .chunk(let i, let phase, let part, let bytes): try applyChunk(bytes, part: part, phase: phase, device: i)
        case .pages(let pages): try applyPages(pages)
        case .control(let frame):
            switch frame.body {
            case .iterationEnd(let it): progress.withLock { $0.iterations = Int(it.iteration) + 1 }
            case .deviceEnd(let end): try verify(end, device: Int(frame.device))
            case .complete: try sendReady()
            case .dirtyBitmap: break  // informational: the pages that follow carry the data
            default: throw .unexpectedFrame("\(frame.body.name) in the data stream")
            }
        }
    }

    private func applyChunk(_ bytes: [UInt8], part: ChunkPart, phase: Phase, device i: Int) throws(MigrationFailure) {
        let completed = try deviceCall(devices[i].name) { () throws(DeviceError) in try write(bytes, part: part, device: i) }
        digests[i].update(bytes)
        let n = UInt64(bytes.count)
        progress.withLock { p in
            p.devices[i].bytes += n
            if completed { p.devices[i].chunks += 1 }
            if phase == .precopy { p.devices[i].precopyBytes += n } else { p.devices[i].stopcopyBytes += n }
            p.rawBytes += n
        }
        if phase != .precopy { state.advance(to: .stopCopy) }
    }

    /// One frame's bytes through the resume sequence; a chunk in pieces is begun at
    /// its first piece (which checks it fits) and finished with its last. The decoder
    /// has already enforced the order of pieces. Returns whether a chunk completed.
    private func write(_ bytes: [UInt8], part: ChunkPart, device i: Int) throws(DeviceError) -> Bool {
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

    /// Zero segments through `zeroPages` (which skips pages known to be zero), copies
    /// from the pages they name, the others decoded straight into the pages they fill.
    private func applyPages(_ pages: Pages) throws(MigrationFailure) {
        guard let memory else { throw .unexpectedFrame("PAGES without announced guest memory") }
        var n: UInt64 = 0, z: UInt64 = 0
        for segment in pages.segments {
            let count = Int(segment.pageCount)
            if segment.encoding == .zero {
                try deviceCall(nil) { () throws(DeviceError) in try memory.zeroPages(startPFN: segment.startPFN, count: count) }
                z += UInt64(count)
            } else if let source = segment.copySourcePFN {
                // §17: the bytes this stream already put there (the decoder checked the placement).
                try deviceCall(nil) { () throws(DeviceError) in try memory.copyPages(from: source, to: segment.startPFN, count: count) }
            } else {
                try decode(segment, pageSize: Int(pages.pageSize), into: memory)
            }
            n += UInt64(count)
        }
        let raw = n * UInt64(memory.pageSize)
        progress.withLock { $0.pages += n; $0.zeroPages += z; $0.rawBytes += raw }
    }

    private func decode(_ segment: PageSegment, pageSize: Int, into memory: GuestMemory) throws(MigrationFailure) {
        let outcome = try deviceCall(nil) { () throws(DeviceError) in
            try memory.withWritablePages(startPFN: segment.startPFN, count: Int(segment.pageCount)) { (span: inout MutableSpan<UInt8>) throws(WireError) in
                try pageDecoder.decode(segment, pageSize: pageSize, into: &span)
            }
        }
        do throws(WireError) { try outcome.get() } catch { throw MigrationFailure(error) }
    }

    /// DEVICE_END: the totals and the digest of everything applied must match (§5.6, §16).
    private func verify(_ end: DeviceEnd, device i: Int) throws(MigrationFailure) {
        let name = devices[i].name
        let s = progress.withLock { $0.devices[i] }
        if end.chunkCount != s.chunks {
            throw .lengthMismatch(device: name, field: "chunk count", expected: end.chunkCount, actual: s.chunks)
        }
        if end.totalBytes != s.bytes {
            throw .lengthMismatch(device: name, field: "byte count", expected: end.totalBytes, actual: s.bytes)
        }
        let (digest, algorithm) = (digests[i].finalize(), digests[i].algorithm)
        if digest != end.sha256 { throw .digestMismatch(device: name, algorithm: algorithm, expected: end.sha256, actual: digest) }
        ended[i] = true
        progress.withLock { $0.devices[i].record(digest: digest, algorithm) }
        events(.deviceEnd(device: name, bytes: s.bytes, chunks: s.chunks))
    }

    /// COMPLETE with everything applied and verified: READY.
    private func sendReady() throws(MigrationFailure) {
        if let missing = ended.firstIndex(of: false) {
            throw .unexpectedFrame("COMPLETE before DEVICE_END of \(devices[missing].name)")
        }
        // v2 devices leave RESUMING for STOP here, before READY: the driver validates
        // the stream at that arc, so a refusal is an ABORT the source rolls back from,
        // not a failure after COMMIT. Nothing for v1 (docs/DEVICE.md).
        for d in devices { try deviceCall(d.name) { () throws(DeviceError) in try d.device.finishResuming() } }
        // No msync here: MAP_SHARED writes are already visible to the VMM that maps
        // the same file; forcing them to disk is not migration's job and would add
        // the write-back of the whole guest to the downtime.
        state.advance(to: .ready)
        try writer.send(.ready)
        progress.withLock { $0.readySent = true }
        events(.phase(.ready))
    }
}

@available(*, unavailable, message: "an Applier belongs to the pipeline's consumer thread")
extension Applier: Sendable {}
