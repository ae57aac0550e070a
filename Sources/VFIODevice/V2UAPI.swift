internal import CVFIO

// The Linux VFIO device-migration uAPI v2 (5.18+; PRE_COPY and MIG_DATA_SIZE 6.2,
// DMA logging 6.1), as pure byte-level builders and parsers. Layouts and values are
// those of Linux include/uapi/linux/vfio.h (docs/DEVICE.md lists them); the tests
// compare them with the installed header (CVFIO sizes/offsets) where it has them,
// and with rust-vmm's vfio-bindings layout asserts where it does not.

/// `enum vfio_device_mig_state`. The numbers differ from v1's bits (v2 STOP = 1 is v1 RUNNING).
public enum V2State: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case error = 0
    case stop = 1
    case running = 2
    case stopCopy = 3
    case resuming = 4
    case runningP2P = 5
    case preCopy = 6
    case preCopyP2P = 7

    public var description: String {
        switch self {
        case .error: return "ERROR"
        case .stop: return "STOP"
        case .running: return "RUNNING"
        case .stopCopy: return "STOP_COPY"
        case .resuming: return "RESUMING"
        case .runningP2P: return "RUNNING_P2P"
        case .preCopy: return "PRE_COPY"
        case .preCopyP2P: return "PRE_COPY_P2P"
        }
    }

    /// The states of the "saving group": one data_fd session spans them (§1.6).
    public var isPreCopy: Bool { self == .preCopy || self == .preCopyP2P }
    /// States with an open data_fd session.
    public var hasDataSession: Bool { isPreCopy || self == .stopCopy || self == .resuming }

    /// `state_flags_table` of vfio_main.c: the migration flags a state needs.
    public var requiredFlags: V2MigrationFlags {
        switch self {
        case .error: return V2MigrationFlags(rawValue: ~0)
        case .stop, .running, .stopCopy, .resuming: return .stopCopy
        case .runningP2P: return [.stopCopy, .p2p]
        case .preCopy: return [.stopCopy, .preCopy]
        case .preCopyP2P: return [.stopCopy, .p2p, .preCopy]
        }
    }
}

/// `vfio_device_feature_migration.flags`.
public struct V2MigrationFlags: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// Mandatory: STOP, STOP_COPY and RESUMING exist.
    public static let stopCopy = V2MigrationFlags(rawValue: 1 << 0)
    /// RUNNING_P2P (and PRE_COPY_P2P with PRE_COPY).
    public static let p2p = V2MigrationFlags(rawValue: 1 << 1)
    /// PRE_COPY (and PRE_COPY_P2P with P2P), VFIO_MIG_GET_PRECOPY_INFO.
    public static let preCopy = V2MigrationFlags(rawValue: 1 << 2)
    public static let known: V2MigrationFlags = [.stopCopy, .p2p, .preCopy]

    /// "STOP_COPY|P2P|PRE_COPY" (unknown bits in hex): the form HELLO carries.
    public var description: String {
        var names: [String] = []
        if contains(.stopCopy) { names.append("STOP_COPY") }
        if contains(.p2p) { names.append("P2P") }
        if contains(.preCopy) { names.append("PRE_COPY") }
        let unknown = rawValue & ~V2MigrationFlags.known.rawValue
        if unknown != 0 { names.append("0x" + String(unknown, radix: 16)) }
        return names.isEmpty ? "none" : names.joined(separator: "|")
    }

    /// Whether a device with these flags has `state` (what `vfio_mig_get_next_state` checks).
    public func supports(_ state: V2State) -> Bool {
        state != .error && rawValue & state.requiredFlags.rawValue == state.requiredFlags.rawValue
    }
}

/// The ioctl numbers and feature ids v2 uses.
public enum VFIOv2 {
    /// `_IO(VFIO_TYPE, VFIO_BASE + nr)` with asm-generic's `_IOC_NONE` = 0 (x86_64, arm64):
    /// `(';' << 8) | (100 + nr)`. Other architectures encode dir differently (§1.1).
    static func io(_ nr: UInt) -> UInt { (0x3B << 8) | (100 + nr) }

    /// On the device fd (0x3B75). From the installed header.
    public static let deviceFeature = UInt(CVFIO_DEVICE_FEATURE)
    /// On the device fd (0x3B6F): leaves ERROR, aborts RESUMING, invalidates data fds.
    public static let deviceReset = UInt(CVFIO_DEVICE_RESET)
    /// On the **data_fd** (0x3B79). Computed: headers before 6.2 lack it.
    public static let migGetPrecopyInfo = io(21)

    /// `vfio_device_feature.flags` bits around the 16-bit feature index.
    public static let featureMask: UInt32 = 0xFFFF
    public static let featureGet: UInt32 = 1 << 16
    public static let featureSet: UInt32 = 1 << 17
    public static let featureProbe: UInt32 = 1 << 18

    public enum Feature: UInt32, Sendable, CustomStringConvertible {
        case migration = 1
        case migDeviceState = 2
        case dmaLoggingStart = 6
        case dmaLoggingStop = 7
        case dmaLoggingReport = 8
        case migDataSize = 9

        public var description: String {
            switch self {
            case .migration: return "MIGRATION"
            case .migDeviceState: return "MIG_DEVICE_STATE"
            case .dmaLoggingStart: return "DMA_LOGGING_START"
            case .dmaLoggingStop: return "DMA_LOGGING_STOP"
            case .dmaLoggingReport: return "DMA_LOGGING_REPORT"
            case .migDataSize: return "MIG_DATA_SIZE"
            }
        }
    }

    /// GET, SET or PROBE (PROBE may be combined with GET/SET to ask about them).
    public struct Operation: OptionSet, Sendable, Hashable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let get = Operation(rawValue: VFIOv2.featureGet)
        public static let set = Operation(rawValue: VFIOv2.featureSet)
        public static let probe = Operation(rawValue: VFIOv2.featureProbe)
    }

    /// Sizes of the structs (§1.10); `header` is `struct vfio_device_feature` without data[].
    public static let headerSize = 8
    public static let migrationPayloadSize = 8
    public static let migStatePayloadSize = 8
    public static let migDataSizePayloadSize = 8
    public static let precopyInfoSize = 24
    public static let dmaLoggingControlSize = 24
    public static let dmaLoggingRangeSize = 16
    public static let dmaLoggingReportSize = 32
    /// Ranges in one START: "fits into a single kernel page" (PAGE_SIZE / 16 on 4 KiB hosts).
    public static let dmaLoggingMaxRanges = 4096 / 16
}

/// An ioctl argument in 8-byte-aligned memory (the payloads use `__aligned_u64`; QEMU
/// builds them in a `uint64_t` array for the same reason), read and written as
/// little-endian bytes at the uAPI's offsets.
public struct UAPIBuffer: Sendable, Equatable {
    private var words: [UInt64]
    public let count: Int

    public init(count: Int) {
        self.count = count
        words = [UInt64](repeating: 0, count: (count + 7) / 8)
    }

    public init(bytes: [UInt8]) {
        self.init(count: bytes.count)
        for (i, b) in bytes.enumerated() { self[byte: i] = b }
    }

    public subscript(byte i: Int) -> UInt8 {
        get { UInt8(truncatingIfNeeded: words[i / 8] >> (8 * UInt64(i % 8))) }
        set {
            let shift = 8 * UInt64(i % 8)
            words[i / 8] = (words[i / 8] & ~(0xFF << shift)) | (UInt64(newValue) << shift)
        }
    }

    public var bytes: [UInt8] { (0..<count).map { self[byte: $0] } }

    public func u32(at offset: Int) -> UInt32 { UInt32(truncatingIfNeeded: le(offset, 4)) }
    public func u64(at offset: Int) -> UInt64 { le(offset, 8) }
    public mutating func put(_ value: UInt32, at offset: Int) { put(UInt64(value), offset, 4) }
    public mutating func put(_ value: UInt64, at offset: Int) { put(value, offset, 8) }

    private func le(_ offset: Int, _ width: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<width { v |= UInt64(self[byte: offset + i]) << (8 * UInt64(i)) }
        return v
    }

    private mutating func put(_ value: UInt64, _ offset: Int, _ width: Int) {
        for i in 0..<width { self[byte: offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }

    /// The buffer as the kernel seam's `.buffer` argument (exactly `count` bytes, 8-aligned).
    public mutating func withArgument<R, E: Error>(_ body: (VFIOKernel.IoctlArgument) throws(E) -> R) throws(E) -> R {
        let n = count
        return try words.withMutableBytes { (raw) throws(E) in
            try body(.buffer(UnsafeMutableRawBufferPointer(rebasing: raw[0..<n])))
        }
    }
}

/// Builders and parsers for `VFIO_DEVICE_FEATURE` arguments and `vfio_precopy_info`.
public enum V2Argument {
    /// `struct vfio_device_feature` + `payloadSize` zero bytes: argsz = 8 + payload.
    public static func feature(_ feature: VFIOv2.Feature, _ operation: VFIOv2.Operation, payloadSize: Int) -> UAPIBuffer {
        var b = UAPIBuffer(count: VFIOv2.headerSize + payloadSize)
        b.put(UInt32(b.count), at: 0)
        b.put(operation.rawValue | feature.rawValue, at: 4)
        return b
    }

    /// GET MIGRATION (argsz 16, flags 0x10001).
    public static func getMigration() -> UAPIBuffer { feature(.migration, .get, payloadSize: VFIOv2.migrationPayloadSize) }

    public static func migrationFlags(_ b: UAPIBuffer) -> V2MigrationFlags {
        V2MigrationFlags(rawValue: b.u64(at: VFIOv2.headerSize))
    }

    /// SET MIG_DEVICE_STATE (argsz 16, flags 0x20002); data_fd is an output, sent as -1.
    public static func setState(_ state: V2State) -> UAPIBuffer {
        var b = feature(.migDeviceState, .set, payloadSize: VFIOv2.migStatePayloadSize)
        b.put(state.rawValue, at: 8)
        b.put(UInt32(bitPattern: -1), at: 12)
        return b
    }

    /// GET MIG_DEVICE_STATE (argsz 16, flags 0x10002).
    public static func getState() -> UAPIBuffer {
        var b = feature(.migDeviceState, .get, payloadSize: VFIOv2.migStatePayloadSize)
        b.put(UInt32(bitPattern: -1), at: 12)
        return b
    }

    /// `vfio_device_feature_mig_state`: device_state @8 (raw, may be out of range), data_fd @12.
    public static func migState(_ b: UAPIBuffer) -> (state: UInt32, dataFD: Int32) {
        (b.u32(at: 8), Int32(bitPattern: b.u32(at: 12)))
    }

    /// GET MIG_DATA_SIZE (argsz 16, flags 0x10009).
    public static func getMigDataSize() -> UAPIBuffer { feature(.migDataSize, .get, payloadSize: VFIOv2.migDataSizePayloadSize) }
    public static func stopCopyLength(_ b: UAPIBuffer) -> UInt64 { b.u64(at: 8) }

    /// `struct vfio_precopy_info` for VFIO_MIG_GET_PRECOPY_INFO: argsz 24, flags 0
    /// (the 7.1 REINIT flag is opt-in; without opting in the output flags mean nothing).
    public static func precopyInfo() -> UAPIBuffer {
        var b = UAPIBuffer(count: VFIOv2.precopyInfoSize)
        b.put(UInt32(VFIOv2.precopyInfoSize), at: 0)
        return b
    }

    public static func precopyBytes(_ b: UAPIBuffer) -> (initial: UInt64, dirty: UInt64) {
        (b.u64(at: 8), b.u64(at: 16))
    }

    /// PROBE|DMA_LOGGING_START with no payload (argsz 8), as QEMU asks.
    public static func probeDMALogging() -> UAPIBuffer { feature(.dmaLoggingStart, .probe, payloadSize: 0) }

    /// SET DMA_LOGGING_START: page_size @8, num_ranges @16, ranges (user pointer) @24.
    public static func dmaLoggingStart(pageSize: UInt64, rangeCount: UInt32, rangesAddress: UInt64) -> UAPIBuffer {
        var b = feature(.dmaLoggingStart, .set, payloadSize: VFIOv2.dmaLoggingControlSize)
        b.put(pageSize, at: 8)
        b.put(rangeCount, at: 16)
        b.put(rangesAddress, at: 24)
        return b
    }

    /// `vfio_device_feature_dma_logging_range[]`: {iova u64, length u64} each.
    public static func dmaLoggingRanges(_ ranges: [(iova: UInt64, length: UInt64)]) -> UAPIBuffer {
        var b = UAPIBuffer(count: ranges.count * VFIOv2.dmaLoggingRangeSize)
        for (i, r) in ranges.enumerated() {
            b.put(r.iova, at: i * 16)
            b.put(r.length, at: i * 16 + 8)
        }
        return b
    }

    /// SET DMA_LOGGING_STOP (argsz 8, no payload).
    public static func dmaLoggingStop() -> UAPIBuffer { feature(.dmaLoggingStop, .set, payloadSize: 0) }

    /// GET DMA_LOGGING_REPORT: iova @8, length @16, page_size @24, bitmap (user pointer) @32.
    public static func dmaLoggingReport(iova: UInt64, length: UInt64, pageSize: UInt64, bitmapAddress: UInt64) -> UAPIBuffer {
        var b = feature(.dmaLoggingReport, .get, payloadSize: VFIOv2.dmaLoggingReportSize)
        b.put(iova, at: 8)
        b.put(length, at: 16)
        b.put(pageSize, at: 24)
        b.put(bitmapAddress, at: 32)
        return b
    }

    /// The header of any feature argument, as the kernel reads it first.
    public static func header(_ b: UAPIBuffer) -> (argsz: UInt32, flags: UInt32) { (b.u32(at: 0), b.u32(at: 4)) }
}
