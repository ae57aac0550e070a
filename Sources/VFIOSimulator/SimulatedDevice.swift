import Glibc
import SyncPrimitives
import SystemPackage
import VFIODevice

/// Strict in-process vendor driver.
///
/// Behaves like a careful kernel vendor driver for the v8 migration region: every
/// access the header calls undefined, and every step taken out of the header's order,
/// is refused with a typed (errno-like) `DeviceError` and changes nothing. See
/// docs/DEVICE.md for the transition table and the chunk format
/// (`SimulatedStream`). All entry points take one lock, so an engine thread and a
/// workload thread may use the device concurrently.
public final class SimulatedDevice: MigrationRegion, @unchecked Sendable {  // all state under one Lock
    public struct Configuration: Sendable {
        public var stateSize: Int
        public var seed: UInt64
        /// Guest pages the device may DMA into (dirties), from the start of guest memory.
        public var dirtyPagesPerStep: Int
        /// State bytes mutated per workload step while RUNNING.
        public var stateBytesPerStep: Int
        public var maxChunkSize: Int
        /// Every Nth copied_pfns answer is ALL when anything in the rest of the
        /// range is dirty, as a driver whose tracking overflowed reports it
        /// (0: only when at least half of the rest is dirty). Lets tests see ALL
        /// deterministically.
        public var allEvery: Int = 0
        /// The device's initial state content (e.g. a benchmark corpus) instead of
        /// seeded random bytes; its length becomes `stateSize`. Not kept after init.
        public var initialState: [UInt8]?
        /// A file whose first `stateSize` bytes are the initial state, read straight
        /// into the device's memory (no heap copy of a large image).
        public var initialStateFile: String?
        public init(stateSize: Int = 4 << 20, seed: UInt64 = 1, dirtyPagesPerStep: Int = 64,
                    stateBytesPerStep: Int = 16 << 10, maxChunkSize: Int = 1 << 20, initialState: [UInt8]? = nil) {
            self.stateSize = stateSize; self.seed = seed; self.dirtyPagesPerStep = dirtyPagesPerStep
            self.stateBytesPerStep = stateBytesPerStep; self.maxChunkSize = maxChunkSize
            self.initialState = initialState
        }
    }

    /// Device-state granularity of dirty tracking and of block records.
    public static let stateBlockSize = 256
    /// Smallest chunk limit: header + one block record + trailer always fit.
    static let minimumChunk = 512
    /// data_offset candidates: page-aligned slots after the header page.
    static let slotCount: UInt64 = 5
    static let slotSize: UInt64 = 4096
    /// Cap on PFNs per partial bitmap round (one 4 KiB bitmap page).
    public static let maxBitmapPFNsPerRound: UInt64 = 4096 * 8

    /// Transitions this driver supports (besides any state → itself, a no-op).
    public static let supportedTransitions: [(from: DeviceState, to: DeviceState)] = [
        (.running, [.saving, .running]),     // start pre-copy
        ([.saving, .running], .saving),      // stop-and-copy
        ([.saving, .running], .running),     // source rollback
        (.saving, .running),                 // source rollback after stop
        (.saving, .stopped),                 // source done
        (.stopped, .resuming),               // fresh destination
        (.running, .resuming),               // fresh destination
        (.resuming, .running),               // destination resume: validates the stream
        (.resuming, .stopped),               // destination abandons
    ]

    public static func supportsTransition(from: DeviceState, to: DeviceState) -> Bool {
        from == to || supportedTransitions.contains { $0.from == from && $0.to == to }
    }

    public let configuration: Configuration
    public let regionSize: UInt64
    /// Bytes available at any data_offset: the largest chunk or bitmap the driver stages.
    public let stagingCapacity: Int
    private let maxChunk: Int
    private let guestMemory: GuestMemory?
    private let lock = Lock()

    // Everything below is guarded by `lock`.
    private var field: UInt32 = DeviceState.running.rawValue
    private var rng: SplitMix64
    private var state: DeviceStateMemory
    /// Where a resume session assembles the incoming state. A destination allocates it
    /// before it listens (`stageIncoming()`, as a real device has its staging memory),
    /// so faulting in the whole state size is not part of the migration; a source that
    /// never resumes allocates it only if it does.
    private lazy var incomingBuffer = DeviceStateMemory(count: state.count, name: "vfio-sim-incoming", populate: true)
    private var dirtyBlocks: [Bool]
    private var dirtyBlockCount = 0
    /// copied_pfns answers given for ranges with dirty pages (for `allEvery`).
    private var bitmapAnswers = 0
    /// No block below this index is dirty.
    private var firstMaybeDirty = 0
    private var faults: [SimulatedFault] = []
    private var accesses = 0
    private var stateWrites = 0

    /// Where the driver is within the header's sequences.
    private enum Step {
        case idle
        case pendingRead(UInt64)
        /// `read`: the byte ranges of the chunk read so far (it may be read in pieces).
        case saveStaged(offset: UInt64, bytes: [UInt8], chunk: Int, sizeRead: Bool, read: [Range<Int>])
        case bitmapCounted([UInt8])
        case bitmapStaged(offset: UInt64, bytes: [UInt8])
        case resumeStaged(offset: UInt64, written: [Range<Int>])
    }
    private var step: Step = .idle

    // Save session (from entering SAVING|RUNNING until leaving SAVING).
    private var headerSent = false
    private var trailerSent = false
    private var streamBytes: UInt64 = 0
    private var recordCount: UInt64 = 0
    private var streamHash = StreamHash()
    private var saveChunks = 0
    private var lastSaveOffset: UInt64 = 0
    private var lastStagingOffset: UInt64 = 0

    // Dirty-bitmap query parameters, written per round.
    private var queryStart: UInt64?
    private var queryPageSize: UInt64?
    private var queryTotal: UInt64?
    /// Guest pages DMA-written since the last query reported them; tracked while SAVING.
    private var dirtyPages: PageBitset

    // Resume session.
    private var incoming: IncomingStream?
    private var staging: [UInt8]
    private var resumeChunks = 0

    /// Allocates the memory a resume assembles the incoming state in, now (a
    /// destination calls it before it listens).
    public func stageIncoming() {
        lock.withLock { _ = incomingBuffer.count }
    }

    public init(configuration: Configuration, guestMemory: GuestMemory?) {
        var config = configuration
        let initial = config.initialState.flatMap { $0.isEmpty ? nil : $0 }
        // Dropped from the stored configuration: a second reference would make the
        // first workload write copy the whole state (copy-on-write).
        config.initialState = nil
        if let initial { config.stateSize = initial.count }
        config.stateSize = max(1, config.stateSize)
        config.dirtyPagesPerStep = max(0, config.dirtyPagesPerStep)
        config.stateBytesPerStep = max(0, config.stateBytesPerStep)
        self.configuration = config
        self.maxChunk = max(config.maxChunkSize, SimulatedDevice.minimumChunk * 2)
        let capacity = (max(maxChunk, 4096) + 4095) / 4096 * 4096
        self.stagingCapacity = capacity
        self.regionSize = SimulatedDevice.slotSize * SimulatedDevice.slotCount + UInt64(capacity)
        self.guestMemory = guestMemory
        self.rng = SplitMix64(seed: config.seed ^ 0x5EED_0F_D1CE)
        self.state = DeviceStateMemory(count: config.stateSize)
        if let initial {
            state.replace(at: 0, with: initial[...])
        } else if let path = config.initialStateFile {
            // The CLI checked the file; a simulator must not quietly start from other bytes.
            guard state.load(fromFile: path) else {
                fatalError("simulated device: cannot read \(config.stateSize) bytes of state from \(path)")
            }
        } else {
            var seeded = SplitMix64(seed: config.seed)
            state.fill(0..<config.stateSize, with: &seeded)
        }
        let blocks = (config.stateSize + SimulatedDevice.stateBlockSize - 1) / SimulatedDevice.stateBlockSize
        self.dirtyBlocks = [Bool](repeating: false, count: blocks)
        self.dirtyPages = PageBitset(count: Int(guestMemory?.pageCount ?? 0))
        self.staging = []
    }

    // MARK: - Observation and test hooks (simulator only)

    /// The device's current internal state (for comparing source and destination).
    public func stateSnapshot() -> [UInt8] { lock.withLock { state.snapshot() } }

    /// The current device_state field.
    public var currentState: DeviceState { lock.withLock { DeviceState(rawValue: field) } }

    /// Arms a fault; it fires once (the vendor driver returns EIO or rejects).
    public func inject(_ fault: SimulatedFault) { lock.withLock { faults.append(fault) } }

    /// Faults armed and not yet fired.
    public var pendingFaults: [SimulatedFault] { lock.withLock { faults } }

    /// Region accesses that reached the driver (accepted or refused).
    public var accessCount: Int { lock.withLock { accesses } }

    /// device_state writes that reached the driver (accepted or refused).
    public var stateWriteCount: Int { lock.withLock { stateWrites } }

    /// Sets bits 3–31 of device_state, as a future driver might; writes must keep them.
    public func setReservedStateBits(_ bits: UInt32) {
        lock.withLock { field = (field & DeviceState.mask) | (bits & ~DeviceState.mask) }
    }

    /// Guest pages currently marked dirty and not yet reported.
    public var dirtyPageCount: Int { lock.withLock { dirtyPages.setCount } }

    /// A DMA write by the device into exactly these guest pages (deterministic tests):
    /// writes content and marks them dirty if tracking is on. Pages outside guest memory are ignored.
    public func simulateDMA(toPages pfns: [UInt64]) {
        lock.withLock {
            for pfn in pfns { dma(to: pfn) }
        }
    }

    // MARK: - Workload

    /// One step of the running workload: mutates state, DMA-writes and dirties guest pages. No-op unless RUNNING.
    public func workloadStep() {
        lock.withLock {
            guard field & DeviceState.running.rawValue != 0 else { return }
            WorkloadWrites.rewriteState(state, bytes: configuration.stateBytesPerStep, maxRun: 64, rng: &rng) { markStateDirty($0) }
            guard let memory = guestMemory else { return }
            WorkloadWrites.dirtyGuest(pages: configuration.dirtyPagesPerStep, pageCount: memory.pageCount,
                                      random: { rng.next(below: $0) }) { dma(to: $0) }
        }
    }

    private func markStateDirty(_ range: Range<Int>) {
        guard !range.isEmpty else { return }
        let first = range.lowerBound / SimulatedDevice.stateBlockSize
        let last = (range.upperBound - 1) / SimulatedDevice.stateBlockSize
        firstMaybeDirty = min(firstMaybeDirty, first)
        for b in first...last where !dirtyBlocks[b] {
            dirtyBlocks[b] = true
            dirtyBlockCount += 1
        }
    }

    /// Writes one guest page with a zero, compressible or random pattern (lock held).
    private func dma(to pfn: UInt64) {
        guard let memory = guestMemory, pfn < memory.pageCount else { return }
        var page = [UInt8](repeating: 0, count: memory.pageSize)
        switch rng.next(below: 3) {
        case 0:
            break  // zero page
        case 1:
            let text = Array("pfn \(pfn) dma \(rng.next(below: 1000)) ".utf8)
            for i in 0..<page.count { page[i] = text[i % text.count] }
        default:
            rng.fill(&page, range: 0..<page.count)
        }
        try? memory.writePages(startPFN: pfn, bytes: page)  // in bounds by the guard above
        if field & DeviceState.saving.rawValue != 0 { dirtyPages[Int(pfn)] = true }
    }

    // MARK: - Region access

    public func read32(at offset: UInt64) throws(DeviceError) -> UInt32 {
        try lock.withLock { () throws(DeviceError) -> UInt32 in
            accesses += 1
            let f = try MigrationInfo.field(at: offset, width: 4, access: .read)
            return f == .deviceState ? field : 0
        }
    }

    public func write32(_ value: UInt32, at offset: UInt64) throws(DeviceError) {
        try lock.withLock { () throws(DeviceError) -> Void in
            accesses += 1
            let f = try MigrationInfo.field(at: offset, width: 4, access: .write)
            guard f == .deviceState else { throw DeviceError.readOnlyField(field: f.name, offset: offset) }
            stateWrites += 1
            try writeDeviceState(value)
        }
    }

    public func read64(at offset: UInt64) throws(DeviceError) -> UInt64 {
        try lock.withLock { () throws(DeviceError) -> UInt64 in
            accesses += 1
            let f = try MigrationInfo.field(at: offset, width: 8, access: .read)
            if f.access == .writeOnly { throw DeviceError.writeOnlyField(field: f.name, offset: offset) }
            switch f {
            case .pendingBytes: return try readPendingBytes()
            case .dataOffset: return try readDataOffset()
            case .dataSize: return try readDataSize()
            case .copiedPFNs: return try readCopiedPFNs()
            default: preconditionFailure("u64 field \(f.name) not handled")
            }
        }
    }

    public func write64(_ value: UInt64, at offset: UInt64) throws(DeviceError) {
        try lock.withLock { () throws(DeviceError) -> Void in
            accesses += 1
            let f = try MigrationInfo.field(at: offset, width: 8, access: .write)
            if f.access == .readOnly { throw DeviceError.readOnlyField(field: f.name, offset: offset) }
            switch f {
            case .startPFN, .pageSize, .totalPFNs: try writeQueryParameter(f, value)
            case .dataSize: try writeDataSize(value)
            default: preconditionFailure("u64 field \(f.name) not handled")
            }
        }
    }

    public func readBytes(count: Int, at offset: UInt64) throws(DeviceError) -> [UInt8] {
        try lock.withLock { () throws(DeviceError) -> [UInt8] in
            accesses += 1
            try MigrationInfo.checkDataRange(offset: offset, count: count, regionSize: regionSize, access: .read)
            try requireSaving(.read, "data section")
            switch step {
            case .saveStaged(let base, let bytes, let chunk, let sizeRead, var read):
                guard sizeRead else {
                    throw DeviceError.outOfSequence(.read, field: "data section", expected: "read data_size before the data", state: current)
                }
                let window = try slice(of: bytes, at: base, offset: offset, count: count, area: "staged device data")
                if let i = faults.firstIndex(of: .failSaveRead(chunk: chunk)) {
                    faults.remove(at: i)
                    throw DeviceError.deviceIOError(.read, field: "data section", offset: offset, errno: .ioError,
                                                    reason: "injected fault: device failed reading save chunk \(chunk)")
                }
                let at = Int(offset - base)
                read.append(at..<(at + count))
                step = .saveStaged(offset: base, bytes: bytes, chunk: chunk, sizeRead: true, read: read)
                return window
            case .bitmapStaged(let base, let bytes):
                return try slice(of: bytes, at: base, offset: offset, count: count, area: "staged dirty bitmap")
            default:
                throw DeviceError.outOfSequence(.read, field: "data section", expected: "nothing is staged: read pending_bytes, data_offset and data_size first (or copied_pfns and data_offset for a bitmap)", state: current)
            }
        }
    }

    public func writeBytes(_ bytes: [UInt8], at offset: UInt64) throws(DeviceError) {
        try lock.withLock { () throws(DeviceError) -> Void in
            accesses += 1
            try MigrationInfo.checkDataRange(offset: offset, count: bytes.count, regionSize: regionSize, access: .write)
            try requireResuming(.write, "data section")
            guard case .resumeStaged(let base, var written) = step else {
                throw DeviceError.outOfSequence(.write, field: "data section", expected: "read data_offset before writing data", state: current)
            }
            guard offset >= base, offset - base + UInt64(bytes.count) <= UInt64(stagingCapacity) else {
                throw DeviceError.outOfRange(.write, offset: offset, count: bytes.count, limit: base + UInt64(stagingCapacity),
                                             area: "staging area at data_offset \(base)")
            }
            let at = Int(offset - base)
            staging.replaceSubrange(at..<(at + bytes.count), with: bytes)
            written.append(at..<(at + bytes.count))
            step = .resumeStaged(offset: base, written: written)
        }
    }

    // MARK: - Field handlers (lock held)

    private var current: DeviceState { DeviceState(rawValue: field).defined }

    private func requireSaving(_ access: RegionAccess, _ what: String) throws(DeviceError) {
        guard current.contains(.saving) else {
            throw DeviceError.wrongDeviceState(access, field: what, state: current, needs: "SAVING (pre-copy or stop-and-copy)")
        }
    }

    private func requireResuming(_ access: RegionAccess, _ what: String) throws(DeviceError) {
        guard current == .resuming else {
            throw DeviceError.wrongDeviceState(access, field: what, state: current, needs: "RESUMING")
        }
    }

    /// A save chunk the user staged but never read would silently lose device data.
    private func requireNoUnreadChunk(_ access: RegionAccess, _ what: String) throws(DeviceError) {
        if case .saveStaged(_, let bytes, let chunk, _, let read) = step, SimulatedDevice.coveredPrefix(read) < bytes.count {
            let done = SimulatedDevice.coveredPrefix(read)
            throw DeviceError.outOfSequence(access, field: what, expected: "save chunk \(chunk) is staged but only \(done) of its \(bytes.count) bytes were read from data_offset: read data_size and all the data first", state: current)
        }
    }

    private func slice(of bytes: [UInt8], at base: UInt64, offset: UInt64, count: Int, area: String) throws(DeviceError) -> [UInt8] {
        guard offset >= base, offset - base <= UInt64(bytes.count), UInt64(count) <= UInt64(bytes.count) - (offset - base) else {
            throw DeviceError.outOfRange(.read, offset: offset, count: count, limit: base + UInt64(bytes.count),
                                         area: "\(area) [\(base), \(base + UInt64(bytes.count)))")
        }
        let start = Int(offset - base)
        return Array(bytes[start..<(start + count)])
    }

    /// A page-aligned slot ≥ 4096 different from `avoid`.
    private func pickDataOffset(avoiding avoid: UInt64) -> UInt64 {
        while true {
            let candidate = SimulatedDevice.slotSize * (1 + rng.next(below: SimulatedDevice.slotCount))
            if candidate != avoid { return candidate }
        }
    }

    /// Honest estimate: dirty state bytes with their record headers, plus the stream
    /// header until sent, plus the trailer once stopped and until sent.
    private func pendingNow() -> UInt64 {
        if trailerSent { return 0 }
        // O(1): every block is full size but possibly the last one.
        var dirtyBytes = dirtyBlockCount * SimulatedDevice.stateBlockSize
        if let last = dirtyBlocks.indices.last, dirtyBlocks[last] {
            dirtyBytes -= SimulatedDevice.stateBlockSize - blockLength(last)
        }
        var p = UInt64(dirtyBytes + dirtyBlockCount * SimulatedStream.blockRecordOverhead)
        if !headerSent { p += UInt64(SimulatedStream.headerSize) }
        if !current.contains(.running) { p += UInt64(SimulatedStream.trailerSize) }
        return p
    }

    private func blockLength(_ b: Int) -> Int {
        min(SimulatedDevice.stateBlockSize, state.count - b * SimulatedDevice.stateBlockSize)
    }

    private func readPendingBytes() throws(DeviceError) -> UInt64 {
        try requireSaving(.read, "pending_bytes")
        try requireNoUnreadChunk(.read, "pending_bytes")
        let p = pendingNow()
        step = .pendingRead(p)
        return p
    }

    private func readDataOffset() throws(DeviceError) -> UInt64 {
        if current == .resuming {
            if case .resumeStaged(let base, _) = step {
                throw DeviceError.outOfSequence(.read, field: "data_offset", expected: "data_offset \(base) was already read for this chunk: write the data, then data_size", state: current)
            }
            let offset = pickDataOffset(avoiding: lastStagingOffset)
            lastStagingOffset = offset
            step = .resumeStaged(offset: offset, written: [])
            return offset
        }
        try requireSaving(.read, "data_offset")
        switch step {
        case .pendingRead(let p) where p > 0:
            let bytes = stageChunk()
            let offset = pickDataOffset(avoiding: lastSaveOffset)
            lastSaveOffset = offset
            step = .saveStaged(offset: offset, bytes: bytes, chunk: saveChunks, sizeRead: false, read: [])
            saveChunks += 1
            return offset
        case .pendingRead:
            throw DeviceError.outOfSequence(.read, field: "data_offset", expected: "pending_bytes was 0: there is nothing to stage", state: current)
        case .bitmapCounted(let bitmap):
            let offset = pickDataOffset(avoiding: lastSaveOffset)
            step = .bitmapStaged(offset: offset, bytes: bitmap)
            return offset
        default:
            throw DeviceError.outOfSequence(.read, field: "data_offset", expected: "read pending_bytes first (save) or copied_pfns with a count (bitmap)", state: current)
        }
    }

    private func readDataSize() throws(DeviceError) -> UInt64 {
        if current == .resuming {
            throw DeviceError.wrongDeviceState(.read, field: "data_size", state: current, needs: "SAVING (while RESUMING data_size is written, not read)")
        }
        try requireSaving(.read, "data_size")
        guard case .saveStaged(let offset, let bytes, let chunk, _, let read) = step else {
            throw DeviceError.outOfSequence(.read, field: "data_size", expected: "read data_offset before data_size", state: current)
        }
        step = .saveStaged(offset: offset, bytes: bytes, chunk: chunk, sizeRead: true, read: read)
        return UInt64(bytes.count)
    }

    /// Builds the next chunk: block records of dirty state up to a random limit, the
    /// stream header first, the trailer once stopped and everything else sent.
    private func stageChunk() -> [UInt8] {
        let limit = rng.next(in: max(SimulatedDevice.minimumChunk, maxChunk / 8)...maxChunk)
        var out: [UInt8] = []
        out.reserveCapacity(limit)
        if !headerSent {
            SimulatedStream.appendHeader(&out, stateSize: state.count, blockSize: SimulatedDevice.stateBlockSize)
            headerSent = true
        }
        // Start at the lowest block that may be dirty instead of rescanning from 0
        // for every chunk (quadratic in the state size otherwise).
        var b = firstMaybeDirty
        while b < dirtyBlocks.count, dirtyBlockCount > 0 {
            guard dirtyBlocks[b] else { b += 1; continue }
            var bytes = 0
            var end = b
            while end < dirtyBlocks.count, dirtyBlocks[end],
                  out.count + SimulatedStream.blockRecordOverhead + bytes + blockLength(end) <= limit {
                bytes += blockLength(end)
                end += 1
            }
            if end == b { break }  // not even one block fits: next chunk
            let start = b * SimulatedDevice.stateBlockSize
            SimulatedStream.appendBlock(&out, offset: start, from: state, range: start..<(start + bytes))
            for i in b..<end { dirtyBlocks[i] = false }
            dirtyBlockCount -= end - b
            recordCount += 1
            b = end
        }
        firstMaybeDirty = dirtyBlockCount == 0 ? dirtyBlocks.count : b
        if !current.contains(.running), dirtyBlockCount == 0, !trailerSent,
           out.count + SimulatedStream.trailerSize <= limit {
            let trailer = SimulatedStream.Trailer(stateSize: UInt64(state.count), records: recordCount,
                                                  streamBytes: streamBytes + UInt64(out.count),
                                                  streamChecksum: { var h = streamHash; h.update(out[...]); return h.value }(),
                                                  checksum: state.checksum())
            streamHash.update(out[...])
            SimulatedStream.appendTrailer(&out, trailer)
            trailerSent = true
            streamBytes += UInt64(out.count)
            return out
        }
        streamHash.update(out[...])
        streamBytes += UInt64(out.count)
        return out
    }

    private func writeQueryParameter(_ f: MigrationInfo.Field, _ value: UInt64) throws(DeviceError) {
        try requireSaving(.write, f.name)
        try requireNoUnreadChunk(.write, f.name)
        switch f {
        case .startPFN: queryStart = value
        case .pageSize: queryPageSize = value
        default: queryTotal = value
        }
        step = .idle  // a new query round begins; any staged bitmap is gone
    }

    private func readCopiedPFNs() throws(DeviceError) -> UInt64 {
        try requireSaving(.read, "copied_pfns")
        guard let start = queryStart, let pageSize = queryPageSize, let total = queryTotal else {
            let missing = [("start_pfn", queryStart), ("page_size", queryPageSize), ("total_pfns", queryTotal)]
                .filter { $0.1 == nil }.map(\.0).joined(separator: ", ")
            throw DeviceError.outOfSequence(.read, field: "copied_pfns", expected: "write \(missing) first", state: current)
        }
        queryStart = nil; queryPageSize = nil; queryTotal = nil  // each round writes all three again
        step = .idle
        let trackedPageSize = UInt64(guestMemory?.pageSize ?? 4096)
        guard pageSize == trackedPageSize else {
            throw DeviceError.invalidArgument(operation: "copied_pfns read", detail: "page_size \(pageSize) differs from the device's tracking page size \(trackedPageSize) (EINVAL)")
        }
        guard total > 0, !start.addingReportingOverflow(total).overflow else {
            throw DeviceError.invalidArgument(operation: "copied_pfns read", detail: "PFN range [\(start), +\(total)) is empty or overflows (EINVAL)")
        }
        // Pages beyond guest memory are never DMA targets: clean.
        let tracked = UInt64(dirtyPages.count)
        let lo = Int(min(start, tracked)), hi = Int(min(start + total, tracked))
        let dirty = dirtyPages.setCount(in: lo..<hi)
        if dirty == 0 { return MigrationInfo.dirtyPFNsNone }
        bitmapAnswers += 1
        let overflowed = configuration.allEvery > 0 && bitmapAnswers % configuration.allEvery == 0
        if overflowed || UInt64(dirty) * 2 >= total {
            dirtyPages.clear(lo..<hi)
            return MigrationInfo.dirtyPFNsAll
        }
        // Partial: a randomised per-round cap, so one range takes several rounds.
        let spread = total / 2 + 1
        let cap = min(total, SimulatedDevice.maxBitmapPFNsPerRound, max(8, total / 4 + rng.next(below: spread)))
        var bitmap = [UInt8](repeating: 0, count: Bitmap.byteCount(bits: cap))
        for i in 0..<Int(cap) {
            let pfn = start + UInt64(i)
            if pfn < tracked, dirtyPages[Int(pfn)] {
                bitmap[i / 8] |= 1 << UInt8(i % 8)
                dirtyPages[Int(pfn)] = false
            }
        }
        step = .bitmapCounted(bitmap)
        return cap
    }

    private func writeDataSize(_ value: UInt64) throws(DeviceError) {
        guard current == .resuming else {
            throw DeviceError.wrongDeviceState(.write, field: "data_size", state: current, needs: "RESUMING (while SAVING data_size is read, not written)")
        }
        guard case .resumeStaged(let base, let written) = step else {
            throw DeviceError.outOfSequence(.write, field: "data_size", expected: "read data_offset and write the data before data_size", state: current)
        }
        guard value <= UInt64(stagingCapacity) else {
            throw DeviceError.outOfRange(.write, offset: base, count: Int(clamping: value), limit: base + UInt64(stagingCapacity),
                                         area: "staging area at data_offset \(base)")
        }
        let prefix = SimulatedDevice.coveredPrefix(written)
        guard value <= UInt64(prefix) else {
            throw DeviceError.outOfRange(.write, offset: base, count: Int(value), limit: base + UInt64(prefix),
                                         area: "data written at data_offset \(base) (data_size larger than the data written)")
        }
        step = .idle
        let chunk = resumeChunks
        resumeChunks += 1
        if let i = faults.firstIndex(of: .rejectResumeData(chunk: chunk)) {
            faults.remove(at: i)
            if incoming != nil, incoming!.defect == nil { incoming!.defect = "chunk \(chunk) was rejected" }
            throw DeviceError.resumeDataRejected(chunk: chunk, errno: .invalidArgument, reason: "injected fault: driver refused the chunk")
        }
        incoming?.consume(Array(staging[0..<Int(value)]), index: chunk)
    }

    /// Length of the contiguous prefix [0, n) covered by the written ranges.
    static func coveredPrefix(_ ranges: [Range<Int>]) -> Int {
        var end = 0
        for r in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if r.lowerBound > end { break }
            end = max(end, r.upperBound)
        }
        return end
    }

    // MARK: - device_state

    private func writeDeviceState(_ value: UInt32) throws(DeviceError) {
        let from = current
        let to = DeviceState(rawValue: value & DeviceState.mask)
        guard value & ~DeviceState.mask == field & ~DeviceState.mask else {
            throw DeviceError.invalidStateValue(value, reason: "reserved bits 3–31 changed from 0x\(String(field & ~DeviceState.mask, radix: 16)) (read-modify-write required)")
        }
        guard to.isValid else {
            throw DeviceError.invalidStateValue(value, reason: "SAVING and RESUMING together is the invalid state")
        }
        if to == from { return }
        guard SimulatedDevice.supportsTransition(from: from, to: to) else {
            throw DeviceError.invalidTransition(from: from, to: to)
        }
        if let i = faults.firstIndex(of: .failTransition(to: to)) {
            faults.remove(at: i)
            throw DeviceError.transitionFailed(from: from, to: to, errno: .ioError, reason: "injected fault: device did not reach \(to)")
        }
        switch (from, to) {
        case (.running, [.saving, .running]):
            beginSaveSession()
        case (_, .resuming):
            incoming = IncomingStream(stateSize: state.count, blockSize: SimulatedDevice.stateBlockSize, buffer: incomingBuffer)
            staging = [UInt8](repeating: 0, count: stagingCapacity)
            resumeChunks = 0
            step = .idle
        case (.resuming, .running):
            if let problem = incoming?.validate() {
                throw DeviceError.transitionFailed(from: from, to: to, errno: .invalidArgument, reason: "device data stream refused: \(problem)")
            }
            // The assembled buffer becomes the state (no 256 MiB copy inside the
            // downtime); the old state buffer stages the next resume session.
            swap(&state, &incomingBuffer)
            endResumeSession()
        case (.resuming, .stopped):
            endResumeSession()
        case (_, .running), (_, .stopped):
            endSaveSession()   // rollback or completed save
        default:
            break              // SAVING|RUNNING → SAVING: the stream simply continues
        }
        field = (field & ~DeviceState.mask) | to.rawValue
    }

    private func beginSaveSession() {
        // A new stream carries the whole state: everything counts as unsent.
        for i in dirtyBlocks.indices { dirtyBlocks[i] = true }
        dirtyBlockCount = dirtyBlocks.count
        firstMaybeDirty = 0
        headerSent = false; trailerSent = false
        streamBytes = 0; recordCount = 0; saveChunks = 0; streamHash = StreamHash()
        dirtyPages.clearAll()  // tracking starts now
        queryStart = nil; queryPageSize = nil; queryTotal = nil
        step = .idle
    }

    private func endSaveSession() {
        dirtyPages.clearAll()  // tracking ends with SAVING
        queryStart = nil; queryPageSize = nil; queryTotal = nil
        step = .idle
    }

    private func endResumeSession() {
        incoming = nil
        staging = []
        step = .idle
    }
}

public enum SimulatedFault: Sendable, Equatable {
    /// The device_state write to exactly this state fails.
    case failTransition(to: DeviceState)
    /// The data read of save chunk number `chunk` (0-based, counted across phases) fails.
    case failSaveRead(chunk: Int)
    /// The data_size write that commits resume chunk number `chunk` is rejected.
    case rejectResumeData(chunk: Int)
}
