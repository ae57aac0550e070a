import Glibc
import SystemPackage

/// One device that speaks the VFIO migration interface v2: a state machine set with
/// `VFIO_DEVICE_FEATURE` SET `MIG_DEVICE_STATE`, device data as a byte stream on the
/// `data_fd` the state change returns, progress from `VFIO_MIG_GET_PRECOPY_INFO`.
///
/// Every state change is ONE SET of the final state: the kernel walks the arcs of a
/// combination transition itself (VFIO-V2.md §1.6). The data_fd is owned here: kept
/// while the session lasts (PRE_COPY → STOP_COPY continues it), closed when a SET
/// leaves the saving group or RESUMING, or after a reset (which invalidates it).
///
/// Like `MigrationDevice`, used by one thread at a time (the engine's device thread).
public final class VFIOMigrationV2: @unchecked Sendable {  // owns the data_fd; one thread at a time (the session's)
    public let name: String
    public let deviceFD: Int32
    public let kernel: VFIOKernel
    public let flags: V2MigrationFlags
    /// Bytes read from the data_fd per save chunk (one DEVICE_DATA chunk on the wire):
    /// the stream has no driver boundaries, so the transport picks them.
    public let chunkBytes: Int
    /// Keeps what owns `deviceFD` (a discovery handle, a simulator) alive.
    private let owner: AnyObject?

    /// The state as last set or read; after a failed SET, what GET reported.
    public private(set) var state: V2State
    /// The open migration data_fd, if a session is open.
    public private(set) var dataFD: Int32?
    /// A RESUMING session was begun and not yet run or reset: abandoning it needs a reset.
    private var resumeSession = false
    /// The last staged save chunk: `SaveSequence.read` serves pieces of it.
    private var staged: (index: Int, bytes: [UInt8])?
    /// nil: not asked yet; false: the kernel does not offer MIG_DATA_SIZE (ENOTTY).
    private var dataSizeOffered: Bool?

    public init(name: String, deviceFD: Int32, flags: V2MigrationFlags, kernel: VFIOKernel = .live,
                chunkBytes: Int = 1 << 20, owner: AnyObject? = nil, state: V2State = .running) {
        self.name = name; self.deviceFD = deviceFD; self.flags = flags; self.kernel = kernel
        self.chunkBytes = max(1, chunkBytes); self.owner = owner; self.state = state
    }

    deinit { if let fd = dataFD { try? kernel.close(fd) } }

    // MARK: - Discovery

    /// GET MIGRATION: the device's flags, nil when the kernel or device has no v2
    /// migration (ENOTTY, as QEMU reads it). A device without STOP_COPY is refused:
    /// the bit is mandatory (vfio-pci-core does not register such a driver).
    public static func probe(deviceFD: Int32, kernel: VFIOKernel, name: String) throws(DeviceError) -> V2MigrationFlags? {
        var arg = V2Argument.getMigration()
        do throws(Errno) {
            _ = try retryingOnInterrupt { () throws(Errno) in
                try arg.withArgument { (a) throws(Errno) in try kernel.ioctl(deviceFD, VFIOv2.deviceFeature, a) }
            }
        } catch where error == .inappropriateIOCTLForDevice {
            return nil
        } catch {
            throw .v2Feature(device: name, operation: "VFIO_DEVICE_FEATURE GET MIGRATION", errno: error)
        }
        let flags = V2Argument.migrationFlags(arg)
        guard flags.contains(.stopCopy) else {
            throw .protocolViolation(step: "device \(name): GET MIGRATION", detail: "flags \(flags) lack the mandatory STOP_COPY")
        }
        return flags
    }

    // MARK: - Primitive calls

    /// GET MIG_DEVICE_STATE.
    public func currentState() throws(DeviceError) -> V2State {
        var arg = V2Argument.getState()
        try feature(&arg, "VFIO_DEVICE_FEATURE GET MIG_DEVICE_STATE")
        let raw = V2Argument.migState(arg).state
        guard let s = V2State(rawValue: raw) else {
            throw .protocolViolation(step: "device \(name): GET MIG_DEVICE_STATE", detail: "state \(raw) is not a v2 state")
        }
        state = s
        return s
    }

    /// One SET MIG_DEVICE_STATE of `target`. Keeps a returned data_fd; closes ours when
    /// the kernel ends the session (any target outside the saving group / RESUMING, or a
    /// saving-group fd when RESUMING starts). Throws `v2TransitionFailed` with the state
    /// GET reports afterwards.
    public func set(_ target: V2State) throws(DeviceError) {
        let from = state
        let continues = from.isPreCopy && (target.isPreCopy || target == .stopCopy)
        var arg = V2Argument.setState(target)
        do throws(Errno) {
            _ = try retryingOnInterrupt { () throws(Errno) in
                try arg.withArgument { (a) throws(Errno) in try kernel.ioctl(deviceFD, VFIOv2.deviceFeature, a) }
            }
        } catch {
            let landed = try? currentState()
            if let landed, !landed.hasDataSession { closeDataFD() }
            throw .v2TransitionFailed(device: name, from: from, to: target, errno: error, landed: landed)
        }
        state = target
        if !continues && from != target { closeDataFD() }
        let fd = V2Argument.migState(arg).dataFD
        guard fd >= 0 else {
            // A new session must come with a descriptor: RUNNING→PRE_COPY, STOP→STOP_COPY, STOP→RESUMING.
            if target.hasDataSession && dataFD == nil {
                throw .protocolViolation(step: "device \(name): SET \(from) -> \(target)", detail: "no data_fd returned for a new migration session")
            }
            return
        }
        guard dataFD == nil else {
            // QEMU's rule: a second descriptor means device and user disagree (an
            // asynchronous reset); never mix two streams.
            try? kernel.close(fd)
            throw .protocolViolation(step: "device \(name): SET \(from) -> \(target)", detail: "data_fd out of sync: a new one (\(fd)) while \(dataFD!) is open")
        }
        dataFD = fd
    }

    /// VFIO_DEVICE_RESET: the only way out of ERROR and the way to abort RESUMING; the
    /// device is RUNNING afterwards and any data_fd is invalid (closed here).
    public func reset() throws(DeviceError) {
        do throws(Errno) {
            _ = try retryingOnInterrupt { () throws(Errno) in try kernel.ioctl(deviceFD, VFIOv2.deviceReset, .none) }
        } catch {
            throw .v2Feature(device: name, operation: "VFIO_DEVICE_RESET", errno: error)
        }
        closeDataFD()
        resumeSession = false
        state = .running
    }

    /// VFIO_MIG_GET_PRECOPY_INFO on the data_fd (PRE_COPY / PRE_COPY_P2P only).
    public func precopyInfo() throws(DeviceError) -> (initial: UInt64, dirty: UInt64) {
        guard let fd = dataFD else {
            throw .v2DataStream(device: name, operation: "VFIO_MIG_GET_PRECOPY_INFO (no data_fd)", state: state, errno: .badFileDescriptor)
        }
        var arg = V2Argument.precopyInfo()
        do throws(Errno) {
            _ = try retryingOnInterrupt { () throws(Errno) in
                try arg.withArgument { (a) throws(Errno) in try kernel.ioctl(fd, VFIOv2.migGetPrecopyInfo, a) }
            }
        } catch {
            throw .v2DataStream(device: name, operation: "VFIO_MIG_GET_PRECOPY_INFO", state: state, errno: error)
        }
        return V2Argument.precopyBytes(arg)
    }

    /// GET MIG_DATA_SIZE: the driver's estimate of the STOP_COPY stream; nil where the
    /// kernel (< 6.2) or device does not offer it (asked once).
    public func stopCopyLength() throws(DeviceError) -> UInt64? {
        guard dataSizeOffered != false else { return nil }
        var arg = V2Argument.getMigDataSize()
        do throws(Errno) {
            _ = try retryingOnInterrupt { () throws(Errno) in
                try arg.withArgument { (a) throws(Errno) in try kernel.ioctl(deviceFD, VFIOv2.deviceFeature, a) }
            }
        } catch where error == .inappropriateIOCTLForDevice {
            dataSizeOffered = false
            return nil
        } catch {
            throw .v2Feature(device: name, operation: "VFIO_DEVICE_FEATURE GET MIG_DATA_SIZE", errno: error)
        }
        dataSizeOffered = true
        return V2Argument.stopCopyLength(arg)
    }

    // MARK: - Data stream

    /// Reads up to `chunkBytes` from the data_fd. nil when nothing is there: in PRE_COPY
    /// "nothing now" (ENOMSG, or 0 as mtty returns), in STOP_COPY the end of the stream
    /// (read() == 0, permanent). No session (a device without PRE_COPY, in pre-copy): nil.
    public func readChunk() throws(DeviceError) -> [UInt8]? {
        guard let fd = dataFD, state.isPreCopy || state == .stopCopy else { return nil }
        var buffer = [UInt8](repeating: 0, count: chunkBytes)
        var filled = 0
        while filled < buffer.count {
            let n: Int
            do throws(Errno) {
                n = try retryingOnInterrupt { () throws(Errno) in
                    try buffer.withMutableBytes { (raw) throws(Errno) in
                        try kernel.read(fd, UnsafeMutableRawBufferPointer(rebasing: raw[filled...]))
                    }
                }
            } catch where error == .noMessage {
                guard state.isPreCopy else {
                    throw .protocolViolation(step: "device \(name): read in STOP_COPY", detail: "the driver returned ENOMSG, which the uAPI forbids in STOP_COPY")
                }
                break
            } catch {
                throw .v2DataStream(device: name, operation: "read", state: state, errno: error)
            }
            if n == 0 { break }
            filled += n
        }
        guard filled > 0 else { return nil }
        buffer.removeLast(buffer.count - filled)
        return buffer
    }

    /// Writes all of `bytes` to the resume data_fd, in order (short writes continue).
    public func write(_ bytes: [UInt8]) throws(DeviceError) {
        guard !bytes.isEmpty else { return }
        guard let fd = dataFD, state == .resuming else {
            throw .v2DataStream(device: name, operation: "write (no RESUMING data_fd)", state: state, errno: .badFileDescriptor)
        }
        var done = 0
        while done < bytes.count {
            do throws(Errno) {
                let n = try retryingOnInterrupt { () throws(Errno) in
                    try bytes.withBytes { (raw) throws(Errno) in
                        try kernel.write(fd, UnsafeRawBufferPointer(rebasing: raw[done...]))
                    }
                }
                guard n > 0 else { throw Errno.ioError }
                done += n
            } catch {
                throw .v2DataStream(device: name, operation: "write", state: state, errno: error)
            }
        }
    }

    // MARK: - The engine's steps (docs/DEVICE.md, "Two interfaces side by side")

    /// Start saving: RUNNING → PRE_COPY when offered (a data_fd). Without PRE_COPY the
    /// device keeps running and all its data comes in STOP_COPY.
    func startSaving() throws(DeviceError) {
        staged = nil
        if flags.contains(.preCopy) { try set(.preCopy) }
    }

    /// Before any device of the VM stops: PRE_COPY → PRE_COPY_P2P or RUNNING → RUNNING_P2P,
    /// so no device starts P2P DMA into a peer that is already stopped (§2.4). Only with P2P.
    func quiesceP2P() throws(DeviceError) {
        guard flags.contains(.p2p) else { return }
        switch state {
        case .preCopy: try set(.preCopyP2P)
        case .running: try set(.runningP2P)
        default: return
        }
    }

    /// Switch-over: one SET to STOP_COPY (the same fd from PRE_COPY(_P2P), a new one otherwise).
    func stopAndCopy() throws(DeviceError) { try set(.stopCopy) }

    /// Source finished, or destination abandons. A begun resume session (and ERROR) is
    /// left by reset — "to abort a RESUMING session the device must be reset" — then the
    /// device is stopped, so a destination never runs without COMMIT.
    func stop() throws(DeviceError) {
        if resumeSession || state == .error { try reset() }
        try set(.stop)
    }

    /// RUNNING: the source's rollback (one SET; the kernel walks the arcs) or the
    /// destination's resume after COMMIT. A source device found in ERROR is reset.
    func run() throws(DeviceError) {
        let destination = resumeSession
        do throws(DeviceError) {
            try set(.running)
            resumeSession = false
        } catch {
            guard !destination, case .v2TransitionFailed(_, let from, _, let e, let landed) = error, landed == .error else { throw error }
            try reset()
            throw .v2RecoveredByReset(device: name, from: from, errno: e)
        }
    }

    /// STOP → RESUMING (a new data_fd; the kernel walks RUNNING → RUNNING_P2P → STOP first).
    func startResuming() throws(DeviceError) {
        resumeSession = true
        try set(.resuming)
    }

    /// RESUMING → STOP before READY: the driver loads and validates the stream here,
    /// so a stream it refuses fails the session before COMMIT.
    func finishResuming() throws(DeviceError) {
        guard state == .resuming else { return }
        try set(.stop)
    }

    /// pending_bytes' role. In PRE_COPY: what PRECOPY_INFO says is still readable now
    /// (initial + dirty), QEMU's estimate; it reaches 0 when the device is quiet, so an
    /// idle device converges. MIG_DATA_SIZE is not added there: every driver reports a
    /// non-zero STOP_COPY size, which would keep the estimate above any target. Without
    /// PRE_COPY all device data moves in the downtime: MIG_DATA_SIZE (0 where not offered).
    func pendingBytes() throws(DeviceError) -> UInt64 {
        guard state.isPreCopy else { return try stopCopyLength() ?? 0 }
        let info = try precopyInfo()
        let (sum, overflow) = info.initial.addingReportingOverflow(info.dirty)
        return overflow ? .max : sum
    }

    /// Reads the next save chunk and keeps it for `stagedBytes`.
    func stageChunk(index: Int) throws(DeviceError) -> StagedChunk? {
        guard let bytes = try readChunk() else { staged = nil; return nil }
        staged = (index, bytes)
        return StagedChunk(dataOffset: 0, size: UInt64(bytes.count), pendingBefore: 0, index: index)
    }

    func stagedBytes(_ chunk: StagedChunk, at offset: UInt64, count: Int) throws(DeviceError) -> [UInt8] {
        guard let staged, staged.index == chunk.index else {
            throw .invalidArgument(operation: "read save chunk \(chunk.index) of device \(name)", detail: "only the last chunk read from the data_fd is held")
        }
        let start = Int(offset)
        return Array(staged.bytes[start..<(start + count)])
    }

    /// The v1 bits the engine reads back (CLI `device_states`): the nearest region state.
    var regionEquivalent: DeviceState {
        switch state {
        case .running, .runningP2P: return .running
        case .preCopy, .preCopyP2P: return [.saving, .running]
        case .stopCopy: return .saving
        case .stop: return .stopped
        case .resuming: return .resuming
        case .error: return [.saving, .resuming]   // v1's error encoding
        }
    }

    private func closeDataFD() {
        if let fd = dataFD { try? kernel.close(fd) }
        dataFD = nil
        staged = nil
    }

    private func feature(_ arg: inout UAPIBuffer, _ operation: String) throws(DeviceError) {
        do throws(Errno) {
            _ = try retryingOnInterrupt { () throws(Errno) in
                try arg.withArgument { (a) throws(Errno) in try kernel.ioctl(deviceFD, VFIOv2.deviceFeature, a) }
            }
        } catch {
            throw .v2Feature(device: name, operation: operation, errno: error)
        }
    }
}
