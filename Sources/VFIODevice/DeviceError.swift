import SystemErrno
import SystemPackage

/// Direction of a region access, for error messages.
public enum RegionAccess: String, Sendable, Equatable {
    case read, write
}

/// Typed device-layer error; `description` names operation, field/offset and cause.
///
/// The cases a vendor driver would return map to an errno (`errnoCode`): access-rule
/// violations are EINVAL as in the kernel, injected device failures EIO.
public enum DeviceError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Header field accessed at a width other than its native width.
    case wrongWidth(RegionAccess, field: String, offset: UInt64, width: Int, nativeWidth: Int)
    /// Access offset not aligned to the access width.
    case misaligned(RegionAccess, offset: UInt64, width: Int)
    /// A 32/64-bit field access outside the 64-byte header.
    case notAHeaderField(RegionAccess, offset: UInt64, width: Int)
    /// Byte range outside the region, the data section, or the staged data window.
    case outOfRange(RegionAccess, offset: UInt64, count: Int, limit: UInt64, area: String)
    /// Read of start_pfn / page_size / total_pfns.
    case writeOnlyField(field: String, offset: UInt64)
    /// Write of pending_bytes / data_offset / copied_pfns / reserved.
    case readOnlyField(field: String, offset: UInt64)
    /// A step of a header sequence taken before the step that must precede it.
    case outOfSequence(RegionAccess, field: String, expected: String, state: DeviceState)
    /// A sequence access while the device is not in the state the sequence needs.
    case wrongDeviceState(RegionAccess, field: String, state: DeviceState, needs: String)
    /// A device_state value that is never valid (SAVING|RESUMING, clobbered reserved bits).
    case invalidStateValue(UInt32, reason: String)
    /// A state change the vendor driver does not support.
    case invalidTransition(from: DeviceState, to: DeviceState)
    /// The driver refused a supported transition (device error, stream validation).
    case transitionFailed(from: DeviceState, to: DeviceState, errno: Errno, reason: String)
    /// The driver failed an otherwise valid access.
    case deviceIOError(RegionAccess, field: String, offset: UInt64, errno: Errno, reason: String)
    /// The driver rejected a resume chunk at its data_size write.
    case resumeDataRejected(chunk: Int, errno: Errno, reason: String)
    /// The driver reported something the header does not allow (e.g. data past the region).
    case protocolViolation(step: String, detail: String)
    /// A system call failed.
    case systemCall(String, path: String?, errno: Errno)
    /// pread/pwrite transferred fewer bytes than a field access needs, or hit end of file.
    case shortTransfer(RegionAccess, offset: UInt64, expected: Int, transferred: Int)
    /// /dev/vfio/GROUP cannot be opened.
    case noSuchGroup(path: String, errno: Errno)
    /// Not all devices of the IOMMU group are bound to vfio drivers.
    case groupNotViable(group: String)
    /// No region of the device carries the type 3 / subtype 1 capability.
    case noMigrationRegion(device: String, regionsScanned: Int)
    /// The region-info capability chain is malformed.
    case malformedCapabilityChain(offset: UInt32, reason: String)
    /// A PFN range outside guest memory.
    case pageOutOfRange(startPFN: UInt64, count: UInt64, pageCount: UInt64)
    /// A caller-supplied argument that cannot be used.
    case invalidArgument(operation: String, detail: String)
    /// A resume chunk larger than the data section the driver offers at its data_offset:
    /// refused before any of it is written.
    case chunkDoesNotFit(chunk: Int, bytes: UInt64, dataOffset: UInt64, regionSize: UInt64)

    // Device interface v2 (FSM + data_fd). Each names the device, the arc or call, the errno.
    /// SET MIG_DEVICE_STATE `from` → `to` failed; `landed` is the state GET reported
    /// afterwards (the original or one along the kernel's combination path), nil if unreadable.
    case v2TransitionFailed(device: String, from: V2State, to: V2State, errno: Errno, landed: V2State?)
    /// A read/write/VFIO_MIG_GET_PRECOPY_INFO on the data_fd failed in `state`.
    case v2DataStream(device: String, operation: String, state: V2State, errno: Errno)
    /// A VFIO_DEVICE_FEATURE call other than a state change (MIGRATION, MIG_DATA_SIZE,
    /// DMA logging), or VFIO_DEVICE_RESET, failed.
    case v2Feature(device: String, operation: String, errno: Errno)
    /// The source rollback found the device in ERROR and reset it: it runs again, but
    /// the device state it had is gone (the header allows nothing else, §2.3).
    case v2RecoveredByReset(device: String, from: V2State, errno: Errno)
    /// A region access on a device that speaks v2 (or the reverse): a wiring mistake.
    case wrongInterface(device: String, detail: String)

    /// The errno a kernel vendor driver / syscall would report for this error.
    public var errnoCode: Errno {
        switch self {
        case .transitionFailed(_, _, let e, _), .deviceIOError(_, _, _, let e, _),
             .resumeDataRejected(_, let e, _), .systemCall(_, _, let e), .noSuchGroup(_, let e),
             .v2TransitionFailed(_, _, _, let e, _), .v2DataStream(_, _, _, let e), .v2Feature(_, _, let e),
             .v2RecoveredByReset(_, _, let e):
            return e
        case .shortTransfer, .protocolViolation: return .ioError
        case .noMigrationRegion: return .operationNotSupportedByDevice   // ENODEV
        case .pageOutOfRange, .outOfRange: return .badAddress            // EFAULT
        case .groupNotViable: return .notPermitted
        case .chunkDoesNotFit: return .fileTooLarge                      // EFBIG
        default: return .invalidArgument
        }
    }

    public var description: String {
        switch self {
        case let .wrongWidth(a, field, offset, width, native):
            return "\(a) of \(field) at offset \(offset) with width \(width) refused: the field is \(native) bytes wide and may only be accessed at its native width (EINVAL)"
        case let .misaligned(a, offset, width):
            return "\(width)-byte \(a) at offset \(offset) refused: not aligned to \(width) bytes (EINVAL)"
        case let .notAHeaderField(a, offset, width):
            return "\(width)-byte \(a) at offset \(offset) refused: not a field of the 64-byte migration header (EINVAL)"
        case let .outOfRange(a, offset, count, limit, area):
            return "\(a) of \(count) bytes at offset \(offset) refused: outside the \(area) (limit \(limit)) (EFAULT)"
        case let .writeOnlyField(field, offset):
            return "read of \(field) at offset \(offset) refused: the field is write-only (EINVAL)"
        case let .readOnlyField(field, offset):
            return "write of \(field) at offset \(offset) refused: the field is read-only (EINVAL)"
        case let .outOfSequence(a, field, expected, state):
            return "\(a) of \(field) out of sequence in state \(state): \(expected) (EINVAL)"
        case let .wrongDeviceState(a, field, state, needs):
            return "\(a) of \(field) refused in state \(state): needs \(needs) (EINVAL)"
        case let .invalidStateValue(value, reason):
            return "device_state value 0x\(String(value, radix: 16)) (\(DeviceState(rawValue: value))) refused: \(reason) (EINVAL)"
        case let .invalidTransition(from, to):
            return "device state transition \(from) -> \(to) is not supported by the driver (EINVAL)"
        case let .transitionFailed(from, to, e, reason):
            return "device state transition \(from) -> \(to) failed: \(reason): \(e.explanation)"
        case let .deviceIOError(a, field, offset, e, reason):
            return "\(a) of \(field) at offset \(offset) failed: \(reason): \(e.explanation)"
        case let .resumeDataRejected(chunk, e, reason):
            return "resume chunk \(chunk) rejected at its data_size write: \(reason): \(e.explanation)"
        case let .protocolViolation(step, detail):
            return "vendor driver broke the migration protocol at \(step): \(detail)"
        case let .systemCall(op, path, e):
            return "\(op)\(path.map { " \($0)" } ?? "") failed: \(e.explanation)"
        case let .shortTransfer(a, offset, expected, got):
            return "short \(a) at offset \(offset): \(got) of \(expected) bytes (end of file or partial field access)"
        case let .noSuchGroup(path, e):
            return "VFIO group \(path) cannot be opened: \(e.explanation); is the device bound to vfio-pci and the group number right?"
        case let .groupNotViable(group):
            return "VFIO group \(group) is not viable: bind every device of the IOMMU group to vfio-pci (or unbind it)"
        case let .noMigrationRegion(device, n):
            return "device \(device) has no migration region (type 3 / subtype 1) among its \(n) regions"
        case let .malformedCapabilityChain(offset, reason):
            return "malformed VFIO capability chain at offset \(offset): \(reason)"
        case let .pageOutOfRange(start, count, pages):
            return "guest pages [\(start), \(start &+ count)) outside guest memory of \(pages) pages"
        case let .invalidArgument(op, detail):
            return "\(op): \(detail)"
        case let .chunkDoesNotFit(chunk, bytes, offset, size):
            let section = size > offset ? size - offset : 0
            return "resume chunk \(chunk) of \(bytes) bytes does not fit the data section at data_offset \(offset) (\(section) bytes up to the region's end at \(size)); nothing of it was written (EFBIG)"
        case let .v2TransitionFailed(device, from, to, e, landed):
            let now = landed.map { "the device is now in \($0)" } ?? "its state could not be read back"
            return "device \(device): migration state change \(from) -> \(to) failed: \(e.explanation); \(now)"
        case let .v2DataStream(device, operation, state, e):
            return "device \(device): \(operation) on the migration data_fd in \(state) failed: \(e.explanation)"
        case let .v2Feature(device, operation, e):
            return "device \(device): \(operation) failed: \(e.explanation)"
        case let .v2RecoveredByReset(device, from, e):
            return "device \(device): RUNNING could not be set (\(e.explanation)) and the device was in ERROR; VFIO_DEVICE_RESET brought it back to RUNNING, its migration state from \(from) is lost"
        case let .wrongInterface(device, detail):
            return "device \(device): \(detail)"
        }
    }
}
