import Glibc
import SyncPrimitives
import SystemErrno
import SystemPackage
import VFIODevice

/// One log for several simulated devices, in the order their calls reached the
/// drivers: what "all devices P2P before any stops" is checked against.
public final class V2Journal: @unchecked Sendable {  // `lines` only under `lock`
    private let lock = Lock()
    private var lines: [String] = []
    public init() {}
    public var entries: [String] { lock.withLock { lines } }
    func append(_ line: String) { lock.withLock { lines.append(line) } }
}

/// A fault armed on the simulated v2 driver; each fires once.
public enum V2SimFault: Sendable, Equatable {
    /// The driver fails the arc `from` → `to` (one step of a combination transition)
    /// with `errno`; the device stays in `from`, or lands in `landIn` (e.g. ERROR).
    case failArc(from: V2State, to: V2State, errno: Errno = .ioError, landIn: V2State? = nil)
    /// read() on the save data_fd fails with EIO once this many stream bytes were read.
    case failRead(afterBytes: UInt64)
    /// write() on the resume data_fd fails with EIO once this many bytes were accepted.
    case failWrite(afterBytes: UInt64)
    /// The produced stream carries one flipped byte at this offset: the destination
    /// driver refuses it at RESUMING → STOP (checksums).
    case corruptStream(atByte: UInt64)
    /// VFIO_MIG_GET_PRECOPY_INFO fails with EIO.
    case failPrecopyInfo
    /// DMA_LOGGING_REPORT fails with EIO.
    case failReport
}

/// A strict in-process vendor driver for the v2 migration interface, reached only
/// through a played kernel (`kernel`): its ioctls are answered here the way
/// `drivers/vfio/vfio_main.c` and a driver's `mig_ops`/`log_ops` answer them, its
/// data_fd is a real pipe (so pread/pwrite/lseek fail with ESPIPE by the real kernel,
/// close is real), and read/write on it let the driver fill or drain its end first —
/// only a driver can answer ENOMSG. See docs/DEVICE.md for the rules it enforces.
public final class SimulatedV2Device: @unchecked Sendable {  // all state guarded by `lock`
    public struct Configuration: Sendable {
        public var stateSize: Int
        public var seed: UInt64
        /// What GET MIGRATION reports (STOP_COPY is mandatory).
        public var flags: V2MigrationFlags
        /// Guest pages DMA-written per workload step while the device runs.
        public var dirtyPagesPerStep: Int
        /// State bytes rewritten per workload step while the device runs.
        public var stateBytesPerStep: Int
        /// `log_ops` present: DMA_LOGGING_* answered (else ENOTTY).
        public var dmaLogging: Bool = true
        /// MIG_DATA_SIZE answered (kernel ≥ 6.2; else ENOTTY).
        public var offersDataSize: Bool = true
        /// PRE_COPY's temporary end of stream as mtty does it (read returns 0), not ENOMSG.
        public var precopyEndReturnsZero: Bool = false
        /// Most bytes one read() returns, so reads come in varying pieces.
        public var maxReadBytes: Int = 64 << 10
        /// A refused stream at RESUMING → STOP lands in ERROR (the header allows either).
        public var refusedStreamLandsInError: Bool = false
        /// Initial state content instead of seeded random bytes (its length is the state size).
        public var initialState: [UInt8]?

        public init(stateSize: Int = 1 << 20, seed: UInt64 = 1, flags: V2MigrationFlags = [.stopCopy, .p2p, .preCopy],
                    dirtyPagesPerStep: Int = 16, stateBytesPerStep: Int = 4096) {
            self.stateSize = stateSize; self.seed = seed; self.flags = flags
            self.dirtyPagesPerStep = dirtyPagesPerStep; self.stateBytesPerStep = stateBytesPerStep
        }
    }

    /// Granularity of the device's own dirty tracking and of block records.
    public static let blockSize = 1024
    /// Blocks per block record at most.
    static let blocksPerRecord = 64
    /// Log lines kept (the rest are counted).
    static let logCapacity = 50_000

    public let configuration: Configuration
    /// The device fd the played kernel answers for (a real memfd: unique, closable).
    public let deviceFD: Int32
    private let guestMemory: GuestMemory?
    private let lock = Lock()

    private var mig: V2State = .running
    private var rng: SplitMix64
    private var state: DeviceStateMemory
    private var incomingBuffer: DeviceStateMemory
    private var faults: [V2SimFault] = []
    private var logLines: [String] = []
    private var logDropped = 0
    private var resets = 0
    private var journal: (V2Journal, String)?

    /// One data_fd session: the user's pipe end and the driver's.
    private final class Session {
        let userFD: Int32
        var driverFD: Int32
        let saving: Bool
        /// The driver ended the session (arc out of the data state, reset): ENODEV.
        var disabled = false
        /// Bytes in the pipe the user has not read yet (save).
        var inPipe = 0
        init(userFD: Int32, driverFD: Int32, saving: Bool) { self.userFD = userFD; self.driverFD = driverFD; self.saving = saving }
    }
    private var sessions: [Int32: Session] = [:]
    private var active: Session?

    // Save stream (from PRE_COPY or STOP_COPY entry until the session ends).
    private var initialPending: PageBitset
    private var initialCursor = 0
    private var redirty: PageBitset
    private var redirtyCursor = 0
    private var headerPending = false
    private var trailerDone = false
    private var outgoing: [UInt8] = []
    private var outCursor = 0
    private var outgoingInitial = 0
    private var recordsOut: UInt64 = 0
    private var hashOut = V2Stream.hashSeed
    private var streamProduced: UInt64 = 0   // bytes of records produced (before the trailer)
    private var streamMoved: UInt64 = 0      // bytes moved into the pipe
    private var streamRead: UInt64 = 0       // bytes the user read

    // Resume stream.
    private var incoming: V2IncomingStream?
    private var resumeWritten: UInt64 = 0

    // DMA logging.
    private var loggedRanges: [(iova: UInt64, length: UInt64)]?
    private var dmaLog: PageBitset
    private var loggingStops = 0

    public init(configuration: Configuration, guestMemory: GuestMemory?) {
        var config = configuration
        let initial = config.initialState.flatMap { $0.isEmpty ? nil : $0 }
        config.initialState = nil
        if let initial { config.stateSize = initial.count }
        config.stateSize = max(1, config.stateSize)
        config.flags.insert(.stopCopy)
        config.maxReadBytes = max(1, config.maxReadBytes)
        self.configuration = config
        self.guestMemory = guestMemory
        rng = SplitMix64(seed: config.seed ^ 0x0002_5EED)
        state = DeviceStateMemory(count: config.stateSize, name: "vfio-sim-v2-state")
        incomingBuffer = DeviceStateMemory(count: config.stateSize, name: "vfio-sim-v2-incoming")
        if let initial {
            state.replace(at: 0, with: initial[...])
        } else {
            var seeded = SplitMix64(seed: config.seed)
            state.fill(0..<config.stateSize, with: &seeded)
        }
        let blocks = (config.stateSize + Self.blockSize - 1) / Self.blockSize
        initialPending = PageBitset(count: blocks)
        redirty = PageBitset(count: blocks)
        dmaLog = PageBitset(count: Int(guestMemory?.pageCount ?? 0))
        guard let fd = try? VFIOKernel.live.memfdCreate("vfio-sim-v2-device") else {
            fatalError("simulated v2 device: no descriptor for the device (out of file descriptors?)")
        }
        deviceFD = fd
    }

    deinit {
        for s in sessions.values {
            Glibc.close(s.userFD)
            if s.driverFD >= 0 { Glibc.close(s.driverFD) }
        }
        Glibc.close(deviceFD)
    }

    // MARK: - The played kernel

    /// The running kernel for everything, except this device's fd and its data_fds,
    /// which this driver answers (ioctl, read, write, close).
    public var kernel: VFIOKernel {
        let live = VFIOKernel.live
        return VFIOKernel(
            open: live.open,
            close: { [self] fd throws(Errno) in try close(fd) },
            ioctl: { [self] fd, request, argument throws(Errno) in try ioctl(fd, request, argument) },
            pread: live.pread, pwrite: live.pwrite,   // on a data_fd: ESPIPE from the real pipe
            fileSize: live.fileSize, truncate: live.truncate, memfdCreate: live.memfdCreate,
            mmap: live.mmap, munmap: live.munmap, madvise: live.madvise, msync: live.msync,
            fileSystemType: live.fileSystemType, seekData: live.seekData,
            read: { [self] fd, buffer throws(Errno) in try read(fd, buffer) },
            write: { [self] fd, buffer throws(Errno) in try write(fd, buffer) })
    }

    /// The engine's device for this simulated driver, as discovery would build it.
    public func migrationDevice(name: String, chunkBytes: Int = 1 << 20) throws(DeviceError) -> MigrationDevice {
        let k = kernel
        guard let flags = try VFIOMigrationV2.probe(deviceFD: deviceFD, kernel: k, name: name) else {
            throw DeviceError.wrongInterface(device: name, detail: "the simulated device answers ENOTTY to GET MIGRATION")
        }
        let v2 = VFIOMigrationV2(name: name, deviceFD: deviceFD, flags: flags, kernel: k, chunkBytes: chunkBytes, owner: self)
        _ = try v2.currentState()
        return MigrationDevice(name: name, v2: v2)
    }

    // MARK: - Observation and test hooks

    public var currentState: V2State { lock.withLock { mig } }
    public func stateSnapshot() -> [UInt8] { lock.withLock { state.snapshot() } }
    public func inject(_ fault: V2SimFault) { lock.withLock { faults.append(fault) } }
    public var pendingFaults: [V2SimFault] { lock.withLock { faults } }
    /// Every call that reached the driver, in order ("ioctl(dev 5, …) = 0 …").
    public var log: [String] { lock.withLock { logLines + (logDropped > 0 ? ["… \(logDropped) more"] : []) } }
    public func clearLog() { lock.withLock { logLines.removeAll(); logDropped = 0 } }
    public var resetCount: Int { lock.withLock { resets } }
    /// Also writes every log line, prefixed "NAME: ", into `journal`.
    public func record(into journal: V2Journal, as name: String) { lock.withLock { self.journal = (journal, name) } }
    public var dmaLoggingActive: Bool { lock.withLock { loggedRanges != nil } }
    /// DMA_LOGGING_STOP calls that reached the driver.
    public var dmaLoggingStopCount: Int { lock.withLock { loggingStops } }
    /// data_fds the user still holds open.
    public var openDataFDs: Int { lock.withLock { sessions.count } }
    public var dirtyPageCount: Int { lock.withLock { dmaLog.setCount } }

    /// Guest pages the device DMA-writes now (deterministic tests): content written,
    /// logged if DMA logging covers them.
    public func simulateDMA(toPages pfns: [UInt64]) { lock.withLock { for p in pfns { dma(to: p) } } }

    // MARK: - Workload

    /// One step while the device executes (RUNNING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P):
    /// rewrites state in short runs (blocks already sent become dirty data), DMA-writes guest pages.
    public func workloadStep() {
        lock.withLock {
            guard [.running, .runningP2P, .preCopy, .preCopyP2P].contains(mig) else { return }
            WorkloadWrites.rewriteState(state, bytes: configuration.stateBytesPerStep, maxRun: 256, rng: &rng) { markDirty($0) }
            guard let memory = guestMemory else { return }
            WorkloadWrites.dirtyGuest(pages: configuration.dirtyPagesPerStep, pageCount: memory.pageCount,
                                      random: { rng.next(below: $0) }) { dma(to: $0) }
        }
    }

    /// State blocks changed while a save session is open: the ones already sent are sent again.
    private func markDirty(_ range: Range<Int>) {
        guard active?.saving == true, !range.isEmpty else { return }
        for b in (range.lowerBound / Self.blockSize)...((range.upperBound - 1) / Self.blockSize) where !initialPending[b] {
            redirty[b] = true
            redirtyCursor = min(redirtyCursor, b)
        }
    }

    private func dma(to pfn: UInt64) {
        guard let memory = guestMemory, pfn < memory.pageCount else { return }
        var page = [UInt8](repeating: 0, count: memory.pageSize)
        switch rng.next(below: 3) {
        case 0: break
        case 1:
            let text = Array("v2 pfn \(pfn) dma \(rng.next(below: 1000)) ".utf8)
            for i in 0..<page.count { page[i] = text[i % text.count] }
        default: rng.fill(&page, range: 0..<page.count)
        }
        try? memory.writePages(startPFN: pfn, bytes: page)
        let iova = pfn * UInt64(memory.pageSize)
        if let ranges = loggedRanges, ranges.contains(where: { iova >= $0.iova && iova - $0.iova < $0.length }) {
            dmaLog[Int(pfn)] = true
        }
    }

    // MARK: - close / read / write

    private func close(_ fd: Int32) throws(Errno) {
        lock.withLock {
            guard let s = sessions.removeValue(forKey: fd) else { return }
            note("close(data_fd \(fd))")
            if s.driverFD >= 0 { Glibc.close(s.driverFD); s.driverFD = -1 }
            if active === s { active = nil }   // the user gave up the stream; the state stays
        }
        try VFIOKernel.live.close(fd)
    }

    private func session(_ fd: Int32) -> Session? { lock.withLock { sessions[fd] } }

    private func read(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        // Other descriptors are the running kernel's, read without the driver's lock (they may block).
        guard session(fd) != nil else { return try VFIOKernel.live.read(fd, buffer) }
        return try lock.withLock { () throws(Errno) -> Int in
            guard let s = sessions[fd] else { throw .badFileDescriptor }
            do throws(Errno) {
                let n = try readLocked(s, buffer)
                note("read(data_fd \(fd), \(buffer.count)) = \(n)")
                return n
            } catch {
                note("read(data_fd \(fd), \(buffer.count)) = -1 \(name(error))")
                throw error
            }
        }
    }

    private func readLocked(_ s: Session, _ buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        if s.disabled { throw .operationNotSupportedByDevice }
        guard s.saving else { return try VFIOKernel.live.read(s.userFD, buffer) }   // the write end: EBADF
        if let i = faults.firstIndex(where: { if case .failRead(let after) = $0 { return streamRead >= after } else { return false } }) {
            faults.remove(at: i)
            throw .ioError
        }
        let want = min(buffer.count, configuration.maxReadBytes, pipeCapacity(s.driverFD))
        while s.inPipe < want {
            if outCursor == outgoing.count {
                outgoing.removeAll(keepingCapacity: true); outCursor = 0
                guard produceRecord() else { break }
                continue
            }
            var piece = Array(outgoing[outCursor..<min(outgoing.count, outCursor + want - s.inPipe)])
            corrupt(&piece, at: streamMoved)
            let n = piece.withUnsafeBytes { Glibc.write(s.driverFD, $0.baseAddress, $0.count) }
            guard n > 0 else { break }
            outCursor += n
            s.inPipe += n
            streamMoved += UInt64(n)
            let initial = min(outgoingInitial, n)
            outgoingInitial -= initial
        }
        if s.inPipe == 0 {
            if mig.isPreCopy {
                // Temporary end of stream: nothing now, more may come.
                if configuration.precopyEndReturnsZero { return 0 }
                throw .noMessage
            }
        }
        if mig == .stopCopy, trailerDone, outCursor == outgoing.count, s.driverFD >= 0 {
            // Permanent end of stream: the writer goes away, read() returns 0 for good.
            Glibc.close(s.driverFD); s.driverFD = -1
        }
        guard s.inPipe > 0 || s.driverFD < 0 else { return 0 }
        let n = try VFIOKernel.live.read(s.userFD, UnsafeMutableRawBufferPointer(rebasing: buffer[0..<max(1, min(buffer.count, want))]))
        s.inPipe -= n
        streamRead += UInt64(n)
        return n
    }

    private func corrupt(_ piece: inout [UInt8], at position: UInt64) {
        guard let i = faults.firstIndex(where: {
            if case .corruptStream(let at) = $0 { return at >= position && at < position + UInt64(piece.count) } else { return false }
        }), case .corruptStream(let at) = faults[i] else { return }
        faults.remove(at: i)
        piece[Int(at - position)] ^= 0x5A
    }

    private func write(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) throws(Errno) -> Int {
        guard session(fd) != nil else { return try VFIOKernel.live.write(fd, buffer) }
        return try lock.withLock { () throws(Errno) -> Int in
            guard let s = sessions[fd] else { throw .badFileDescriptor }
            do throws(Errno) {
                let n = try writeLocked(s, buffer)
                note("write(data_fd \(fd), \(buffer.count)) = \(n)")
                return n
            } catch {
                note("write(data_fd \(fd), \(buffer.count)) = -1 \(name(error))")
                throw error
            }
        }
    }

    private func writeLocked(_ s: Session, _ buffer: UnsafeRawBufferPointer) throws(Errno) -> Int {
        if s.disabled { throw .operationNotSupportedByDevice }
        guard !s.saving else { return try VFIOKernel.live.write(s.userFD, buffer) }   // the read end: EBADF
        if let i = faults.firstIndex(where: { if case .failWrite(let after) = $0 { return resumeWritten >= after } else { return false } }) {
            faults.remove(at: i)
            throw .ioError
        }
        // The pipe is empty (drained after every write): a write up to its capacity cannot block.
        let count = min(buffer.count, configuration.maxReadBytes, pipeCapacity(s.driverFD))
        let n = try VFIOKernel.live.write(s.userFD, UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        var drained = [UInt8](repeating: 0, count: n)
        var got = 0
        while got < n {
            let r = drained.withUnsafeMutableBytes { Glibc.read(s.driverFD, $0.baseAddress! + got, n - got) }
            guard r > 0 else { break }
            got += r
        }
        resumeWritten += UInt64(got)
        if let refusal = incoming?.feed(Array(drained[0..<got])) {
            note("driver refuses the stream: \(refusal)")
            throw .invalidArgument
        }
        return n
    }

    private func pipeCapacity(_ fd: Int32) -> Int {
        let size = fd >= 0 ? fcntl(fd, 1032 /* F_GETPIPE_SZ */) : -1
        return size > 0 ? Int(size) : 4096
    }

    // MARK: - ioctl

    private func ioctl(_ fd: Int32, _ request: UInt, _ argument: VFIOKernel.IoctlArgument) throws(Errno) -> Int32 {
        if fd == deviceFD {
            return try lock.withLock { () throws(Errno) -> Int32 in try deviceIoctl(request, argument) }
        }
        if session(fd) != nil {
            return try lock.withLock { () throws(Errno) -> Int32 in try dataFDIoctl(fd, request, argument) }
        }
        return try VFIOKernel.live.ioctl(fd, request, argument)
    }

    private func deviceIoctl(_ request: UInt, _ argument: VFIOKernel.IoctlArgument) throws(Errno) -> Int32 {
        switch request {
        case VFIOv2.deviceReset:
            reset()
            note("ioctl(dev \(deviceFD), VFIO_DEVICE_RESET) = 0 → RUNNING")
            return 0
        case VFIOv2.deviceFeature:
            guard case .buffer(let raw) = argument else { throw .invalidArgument }
            var call = "VFIO_DEVICE_FEATURE"
            do throws(Errno) {
                let result = try feature(raw, describe: &call)
                note("ioctl(dev \(deviceFD), \(call)) = 0")
                return result
            } catch {
                note("ioctl(dev \(deviceFD), \(call)) = -1 \(name(error))")
                throw error
            }
        default:
            note("ioctl(dev \(deviceFD), 0x\(String(request, radix: 16))) = -1 ENOTTY")
            throw .inappropriateIOCTLForDevice
        }
    }

    /// `vfio_ioctl_device_feature` and the feature handlers behind it.
    private func feature(_ raw: UnsafeMutableRawBufferPointer, describe: inout String) throws(Errno) -> Int32 {
        guard raw.count >= VFIOv2.headerSize else { throw .badAddress }
        var arg = UAPIBuffer(bytes: Array(raw))
        let (argsz, flags) = V2Argument.header(arg)
        let id = flags & VFIOv2.featureMask
        let ops = flags & ~VFIOv2.featureMask
        describe = "VFIO_DEVICE_FEATURE \(Self.describe(ops: ops, id: id)) argsz \(argsz)"
        guard argsz >= UInt32(VFIOv2.headerSize) else { throw .invalidArgument }
        guard Int(argsz) <= raw.count else { throw .badAddress }   // copy_from_user past the buffer
        guard ops & ~(VFIOv2.featureGet | VFIOv2.featureSet | VFIOv2.featureProbe) == 0 else { throw .invalidArgument }
        let get = ops & VFIOv2.featureGet != 0, set = ops & VFIOv2.featureSet != 0, probe = ops & VFIOv2.featureProbe != 0
        guard probe || !(get && set) else { throw .invalidArgument }
        let payload = Int(argsz) - VFIOv2.headerSize

        /// `vfio_check_feature`: false = PROBE answered (return 0).
        func check(_ supportsGet: Bool, _ supportsSet: Bool, minimum: Int) throws(Errno) -> Bool {
            if get && !supportsGet { throw .invalidArgument }
            if set && !supportsSet { throw .invalidArgument }
            if probe { return false }
            guard get || set else { throw .invalidArgument }
            guard payload >= minimum else { throw .invalidArgument }
            return true
        }

        switch VFIOv2.Feature(rawValue: id) {
        case .migration:
            guard try check(true, false, minimum: VFIOv2.migrationPayloadSize) else { return 0 }
            arg.put(configuration.flags.rawValue, at: 8)
            describe += " → flags \(configuration.flags)"
        case .migDeviceState:
            guard try check(true, true, minimum: VFIOv2.migStatePayloadSize) else { return 0 }
            if get {
                arg.put(mig.rawValue, at: 8)
                arg.put(UInt32(bitPattern: -1), at: 12)
                describe += " → \(mig)"
            } else {
                let requested = arg.u32(at: 8)
                describe = "VFIO_DEVICE_FEATURE SET MIG_DEVICE_STATE \(V2State(rawValue: requested).map { "\($0)" } ?? "\(requested)")"
                arg.put(UInt32(bitPattern: -1), at: 12)   // copied back even on failure
                defer { arg.copy(into: raw) }
                let fd = try setState(requested, describe: &describe)
                arg.put(UInt32(bitPattern: fd), at: 12)
            }
        case .migDataSize:
            guard configuration.offersDataSize else { throw .inappropriateIOCTLForDevice }
            guard try check(true, false, minimum: VFIOv2.migDataSizePayloadSize) else { return 0 }
            let length = stopCopyLength()
            arg.put(length, at: 8)
            describe += " → \(length)"
        case .dmaLoggingStart:
            guard configuration.dmaLogging else { throw .inappropriateIOCTLForDevice }
            guard try check(false, true, minimum: VFIOv2.dmaLoggingControlSize) else { return 0 }
            let chosen = try startLogging(pageSize: arg.u64(at: 8), count: arg.u32(at: 16), address: arg.u64(at: 24))
            arg.put(chosen, at: 8)
            describe += " \(loggedRanges!.map { "[0x\(String($0.iova, radix: 16)), +0x\(String($0.length, radix: 16))]" }.joined(separator: " ")) page \(chosen)"
        case .dmaLoggingStop:
            guard configuration.dmaLogging else { throw .inappropriateIOCTLForDevice }
            guard try check(false, true, minimum: 0) else { return 0 }
            loggedRanges = nil
            loggingStops += 1
            dmaLog.clearAll()
        case .dmaLoggingReport:
            guard configuration.dmaLogging else { throw .inappropriateIOCTLForDevice }
            guard try check(true, false, minimum: VFIOv2.dmaLoggingReportSize) else { return 0 }
            let set = try report(iova: arg.u64(at: 8), length: arg.u64(at: 16), pageSize: arg.u64(at: 24), address: arg.u64(at: 32))
            describe += " [0x\(String(arg.u64(at: 8), radix: 16)), +0x\(String(arg.u64(at: 16), radix: 16))] → \(set) dirty"
        case nil:
            throw .inappropriateIOCTLForDevice
        }
        arg.copy(into: raw)
        return 0
    }

    /// SET MIG_DEVICE_STATE: `vfio_mig_get_next_state` one arc at a time, as drivers
    /// loop it; only the last arc may open a data_fd. Returns it, or -1.
    private func setState(_ raw: UInt32, describe: inout String) throws(Errno) -> Int32 {
        guard let target = V2State(rawValue: raw) else { throw .invalidArgument }
        var arcs: [String] = []
        defer { if !arcs.isEmpty { describe += " [\(arcs.joined(separator: ", "))]" } }
        var fd: Int32 = -1
        while mig != target {
            let next = try Self.nextState(from: mig, to: target, flags: configuration.flags)
            let from = mig
            do throws(Errno) {
                if let opened = try step(from: from, to: next, last: next == target) { fd = opened }
                arcs.append("\(from)→\(next)")
            } catch {
                arcs.append("\(from)→\(next) FAILED, now \(mig)")
                throw error
            }
        }
        if fd >= 0 { describe += " → data_fd \(fd)" }
        return fd
    }

    /// `vfio_mig_get_next_state` (drivers/vfio/vfio_main.c): the next arc toward `target`,
    /// skipping states the flags lack; EINVAL for unsupported states, from ERROR, and for
    /// blocked paths (STOP_COPY → PRE_COPY*).
    static func nextState(from current: V2State, to target: V2State, flags: V2MigrationFlags) throws(Errno) -> V2State {
        guard flags.supports(current), flags.supports(target) else { throw .invalidArgument }
        var next = table(current, target)
        while next != .error && !flags.supports(next) { next = table(next, target) }
        guard next != .error else { throw .invalidArgument }
        return next
    }

    private static func table(_ from: V2State, _ to: V2State) -> V2State {
        switch (from, to) {
        case (_, .error), (.error, _): return .error
        case (.stop, _):
            switch to {
            case .stop: return .stop
            case .stopCopy: return .stopCopy
            case .resuming: return .resuming
            default: return .runningP2P           // RUNNING, PRE_COPY*, RUNNING_P2P
            }
        case (.running, _):
            switch to {
            case .running: return .running
            case .preCopy: return .preCopy
            default: return .runningP2P
            }
        case (.preCopy, _):
            switch to {
            case .preCopy: return .preCopy
            case .preCopyP2P, .stopCopy: return .preCopyP2P
            default: return .running
            }
        case (.preCopyP2P, _):
            switch to {
            case .preCopy: return .preCopy
            case .preCopyP2P: return .preCopyP2P
            case .stopCopy: return .stopCopy
            default: return .runningP2P
            }
        case (.stopCopy, _):
            switch to {
            case .stopCopy: return .stopCopy
            case .preCopy, .preCopyP2P: return .error   // not permitted
            default: return .stop
            }
        case (.resuming, _):
            return to == .resuming ? .resuming : .stop
        case (.runningP2P, _):
            switch to {
            case .running, .preCopy: return .running
            case .preCopyP2P: return .preCopyP2P
            case .runningP2P: return .runningP2P
            default: return .stop
            }
        }
    }

    /// One arc of the driver (mtty_step_state's shape). Returns a new data_fd for the
    /// arcs that open a session.
    private func step(from: V2State, to: V2State, last: Bool) throws(Errno) -> Int32? {
        if let i = faults.firstIndex(where: { if case .failArc(from, to, _, _) = $0 { return true } else { return false } }),
           case .failArc(_, _, let e, let landIn) = faults[i] {
            faults.remove(at: i)
            if let landIn { mig = landIn }
            if mig == .error { disableActive() }
            throw e
        }
        var opened: Int32?
        switch (from, to) {
        case (.running, .runningP2P), (.runningP2P, .running), (.runningP2P, .stop), (.stop, .runningP2P),
             (.preCopy, .preCopyP2P), (.preCopyP2P, .preCopy):
            break   // P2P quiesce on/off; nothing to stream
        case (.preCopyP2P, .stopCopy), (.preCopy, .stopCopy):
            break   // the device stops; the same session streams the rest
        case (.running, .preCopy), (.runningP2P, .preCopyP2P), (.stop, .stopCopy):
            guard last else { throw .invalidArgument }   // a data_fd only on the final arc
            opened = try openSession(saving: true)
        case (.preCopy, .running), (.preCopyP2P, .runningP2P), (.stopCopy, .stop):
            disableActive()
        case (.stop, .resuming):
            guard last else { throw .invalidArgument }
            opened = try openSession(saving: false)
            incoming = V2IncomingStream(stateSize: state.count, blockSize: Self.blockSize, buffer: incomingBuffer)
            resumeWritten = 0
        case (.resuming, .stop):
            // Load and validate here: the arc fails on an incomplete or corrupt stream.
            if let problem = incoming.map({ $0.validate() }) ?? "no resume session" {
                note("driver refuses the stream at RESUMING→STOP: \(problem)")
                if configuration.refusedStreamLandsInError { mig = .error; disableActive() }
                throw .invalidArgument
            }
            swap(&state, &incomingBuffer)
            incoming = nil
            disableActive()
        default:
            throw .invalidArgument
        }
        mig = to
        return opened
    }

    private func openSession(saving: Bool) throws(Errno) -> Int32 {
        var fds: [Int32] = [-1, -1]
        guard Glibc.pipe(&fds) == 0 else { throw .current }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        let user = saving ? fds[0] : fds[1]      // save: the user reads; resume: the user writes
        let driver = saving ? fds[1] : fds[0]
        _ = fcntl(driver, F_SETFL, fcntl(driver, F_GETFL) | O_NONBLOCK)
        let s = Session(userFD: user, driverFD: driver, saving: saving)
        sessions[user] = s
        active = s
        if saving { beginSaveStream() }
        return user
    }

    /// The driver ends the current session: the user's fd stays open but reads ENODEV.
    private func disableActive() {
        guard let s = active else { return }
        s.disabled = true
        if s.driverFD >= 0 { Glibc.close(s.driverFD); s.driverFD = -1 }
        active = nil
    }

    private func reset() {
        resets += 1
        for s in sessions.values { s.disabled = true }
        disableActive()
        incoming = nil
        mig = .running
    }

    // MARK: - Save stream

    private func beginSaveStream() {
        for b in 0..<initialPending.count { initialPending[b] = true }
        redirty.clearAll()
        initialCursor = 0; redirtyCursor = 0
        headerPending = true; trailerDone = false
        outgoing.removeAll(); outCursor = 0; outgoingInitial = 0
        recordsOut = 0; hashOut = V2Stream.hashSeed
        streamProduced = 0; streamMoved = 0; streamRead = 0
    }

    /// Appends the next record to `outgoing`: header, initial blocks, re-dirtied blocks,
    /// then (stopped) the trailer. false when there is nothing to send now.
    private func produceRecord() -> Bool {
        if headerPending {
            append(V2Stream.header(stateSize: state.count, blockSize: Self.blockSize), initial: true)
            headerPending = false
            return true
        }
        if let run = nextRun(&initialPending, cursor: &initialCursor) {
            append(blockRecord(run), initial: true)
            return true
        }
        // A running device keeps changing: its re-dirtied blocks go out in pre-copy and
        // again, frozen, in STOP_COPY.
        if let run = nextRun(&redirty, cursor: &redirtyCursor) {
            append(blockRecord(run), initial: false)
            return true
        }
        if mig == .stopCopy && !trailerDone {
            let t = V2Stream.trailer(stateSize: UInt64(state.count), records: recordsOut, streamBytes: streamProduced,
                                     streamChecksum: hashOut, stateChecksum: state.checksum())
            outgoing += t
            trailerDone = true
            return true
        }
        return false
    }

    private func append(_ record: [UInt8], initial: Bool) {
        outgoing += record
        if initial { outgoingInitial += record.count }
        hashOut = V2Stream.mix(hashOut, record)
        streamProduced += UInt64(record.count)
    }

    private func blockRecord(_ blocks: Range<Int>) -> [UInt8] {
        let start = blocks.lowerBound * Self.blockSize
        let end = min(state.count, blocks.upperBound * Self.blockSize)
        recordsOut += 1
        return V2Stream.block(offset: start, bytes: state.bytes(start..<end))
    }

    /// The first run of set bits at or after `cursor` (at most `blocksPerRecord`), cleared.
    private func nextRun(_ bits: inout PageBitset, cursor: inout Int) -> Range<Int>? {
        var b = cursor
        while b < bits.count && !bits[b] { b += 1 }
        cursor = b
        guard b < bits.count else { return nil }
        var e = b
        while e < bits.count, e - b < Self.blocksPerRecord, bits[e] { bits[e] = false; e += 1 }
        return b..<e
    }

    private var recordBytesPerBlock: Int { Self.blockSize + V2Stream.blockOverhead }

    /// PRECOPY_INFO: initial = header and never-sent blocks (and their bytes not read
    /// yet); dirty = re-dirtied blocks and other unread bytes. Estimates per block record.
    private func precopyBytes() -> (initial: UInt64, dirty: UInt64) {
        let unread = outgoing.count - outCursor + (active?.inPipe ?? 0)
        let unreadInitial = min(unread, outgoingInitial + (active?.inPipe ?? 0))
        let initial = (headerPending ? V2Stream.headerSize : 0) + initialPending.setCount(in: 0..<initialPending.count) * recordBytesPerBlock + unreadInitial
        let dirty = redirty.setCount(in: 0..<redirty.count) * recordBytesPerBlock + (unread - unreadInitial)
        return (UInt64(initial), UInt64(dirty))
    }

    /// MIG_DATA_SIZE: what STOP_COPY would stream from now (the whole state without a session).
    private func stopCopyLength() -> UInt64 {
        guard active?.saving == true else {
            return UInt64(V2Stream.headerSize + initialPending.count * recordBytesPerBlock + V2Stream.trailerSize)
        }
        let p = precopyBytes()
        return p.initial + p.dirty + (trailerDone ? 0 : UInt64(V2Stream.trailerSize))
    }

    private func dataFDIoctl(_ fd: Int32, _ request: UInt, _ argument: VFIOKernel.IoctlArgument) throws(Errno) -> Int32 {
        guard request == VFIOv2.migGetPrecopyInfo, let s = sessions[fd], s.saving else {
            note("ioctl(data_fd \(fd), 0x\(String(request, radix: 16))) = -1 ENOTTY")
            throw .inappropriateIOCTLForDevice   // the resume file has no ioctl; nothing else exists
        }
        do throws(Errno) {
            guard case .buffer(let raw) = argument, raw.count >= 8 else { throw .badAddress }
            var arg = UAPIBuffer(bytes: Array(raw))
            guard arg.u32(at: 0) >= UInt32(VFIOv2.precopyInfoSize), raw.count >= VFIOv2.precopyInfoSize else { throw .invalidArgument }
            guard !s.disabled else { throw .operationNotSupportedByDevice }
            guard mig.isPreCopy else { throw .invalidArgument }
            if let i = faults.firstIndex(of: .failPrecopyInfo) { faults.remove(at: i); throw .ioError }
            let (initial, dirty) = precopyBytes()
            arg.put(UInt32(0), at: 4)
            arg.put(initial, at: 8)
            arg.put(dirty, at: 16)
            arg.copy(into: raw)
            note("ioctl(data_fd \(fd), VFIO_MIG_GET_PRECOPY_INFO) = 0 → initial \(initial), dirty \(dirty)")
            return 0
        } catch {
            note("ioctl(data_fd \(fd), VFIO_MIG_GET_PRECOPY_INFO) = -1 \(name(error))")
            throw error
        }
    }

    // MARK: - DMA logging

    /// The core's checks of DMA_LOGGING_START, then the driver's page size choice.
    private func startLogging(pageSize: UInt64, count: UInt32, address: UInt64) throws(Errno) -> UInt64 {
        guard count > 0 else { throw .invalidArgument }
        guard count <= UInt32(VFIOv2.dmaLoggingMaxRanges) else { throw .argListTooLong }
        guard pageSize > 0, pageSize & (pageSize - 1) == 0 else { throw .invalidArgument }
        guard loggedRanges == nil else { throw .resourceBusy }   // one START until STOP
        guard let bytes = UserMemory.copyIn(address: address, count: Int(count) * VFIOv2.dmaLoggingRangeSize) else {
            throw .badAddress
        }
        let table = UAPIBuffer(bytes: bytes)
        var ranges: [(iova: UInt64, length: UInt64)] = []
        for i in 0..<Int(count) {
            let iova = table.u64(at: i * 16), length = table.u64(at: i * 16 + 8)
            guard iova % pageSize == 0, length % pageSize == 0 else { throw .invalidArgument }
            guard !iova.addingReportingOverflow(length).overflow else { throw .overflow }
            guard !ranges.contains(where: { iova < $0.iova + $0.length && $0.iova < iova + length }) else { throw .invalidArgument }
            ranges.append((iova, length))
        }
        loggedRanges = ranges
        dmaLog.clearAll()
        return max(pageSize, UInt64(guestMemory?.pageSize ?? 4096))
    }

    /// REPORT: sets (never clears) bits of the user's bitmap for logged pages in the
    /// range and clears them from the log. Returns how many bits it set.
    private func report(iova: UInt64, length: UInt64, pageSize: UInt64, address: UInt64) throws(Errno) -> Int {
        guard pageSize >= 4096, pageSize & (pageSize - 1) == 0 else { throw .invalidArgument }
        guard !iova.addingReportingOverflow(length).overflow else { throw .overflow }
        guard let ranges = loggedRanges else { throw .invalidArgument }   // not started
        guard ranges.contains(where: { iova >= $0.iova && iova + length <= $0.iova + $0.length }) else { throw .invalidArgument }
        if let i = faults.firstIndex(of: .failReport) { faults.remove(at: i); throw .ioError }
        let bits = Int((length + pageSize - 1) / pageSize)
        let byteCount = (bits + 63) / 64 * 8
        guard var bitmap = UserMemory.copyIn(address: address, count: byteCount) else { throw .badAddress }
        let guestPage = UInt64(guestMemory?.pageSize ?? 4096)
        var set = 0
        for i in 0..<bits {
            let first = Int((iova + UInt64(i) * pageSize) / guestPage)
            let last = min(dmaLog.count, Int((iova + UInt64(i + 1) * pageSize + guestPage - 1) / guestPage))
            guard first < last, dmaLog.setCount(in: first..<last) > 0 else { continue }
            dmaLog.clear(first..<last)
            bitmap[i / 8] |= 1 << UInt8(i % 8)    // u64 word i/64, bit i%64, little-endian = byte i/8, bit i%8
            set += 1
        }
        guard UserMemory.copyOut(bitmap, to: address) else { throw .badAddress }
        return set
    }

    // MARK: - Log

    private func note(_ line: String) {
        if let (j, name) = journal { j.append("\(name): \(line)") }
        if logLines.count < Self.logCapacity { logLines.append(line) } else { logDropped += 1 }
    }

    private func name(_ e: Errno) -> String { e.symbolicName }

    static func describe(ops: UInt32, id: UInt32) -> String {
        var parts: [String] = []
        if ops & VFIOv2.featureGet != 0 { parts.append("GET") }
        if ops & VFIOv2.featureSet != 0 { parts.append("SET") }
        if ops & VFIOv2.featureProbe != 0 { parts.append("PROBE") }
        let unknown = ops & ~(VFIOv2.featureGet | VFIOv2.featureSet | VFIOv2.featureProbe)
        if unknown != 0 { parts.append("0x" + String(unknown, radix: 16)) }
        let feature = VFIOv2.Feature(rawValue: id).map { "\($0)" } ?? "feature \(id)"
        return (parts.isEmpty ? "" : parts.joined(separator: "|") + " ") + feature
    }
}

extension UAPIBuffer {
    /// Writes the buffer back into the caller's argument (copy_to_user).
    func copy(into raw: UnsafeMutableRawBufferPointer) {
        for i in 0..<min(count, raw.count) { raw[i] = self[byte: i] }
    }
}
