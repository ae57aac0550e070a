// CONTRACT STUB — the public surface the engine codes against. The VFIODevice
// owner replaces these bodies (and may split this file); signatures stay.
import Glibc

/// `device_state` bits (seed header). Bits 3–31 are reserved and preserved.
public struct DeviceState: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let running = DeviceState(rawValue: 1 << 0)
    public static let saving = DeviceState(rawValue: 1 << 1)
    public static let resuming = DeviceState(rawValue: 1 << 2)
    public static let stopped: DeviceState = []
    public static let mask: UInt32 = 0x7
    /// `SAVING|RESUMING` is invalid and is never written.
    public var isValid: Bool { !(contains(.saving) && contains(.resuming)) }
    public var description: String { fatalError("stub") }
}

/// Typed device-layer error; `description` names operation, field/offset and cause.
public enum DeviceError: Error, Sendable, Equatable, CustomStringConvertible {
    case stub(String)
    public var description: String { fatalError("stub") }
}

/// Access to one migration region: header fields at native width and alignment
/// only, and byte ranges inside the data section.
public protocol MigrationRegion: AnyObject, Sendable {
    var regionSize: UInt64 { get }
    func read32(at offset: UInt64) throws -> UInt32
    func write32(_ value: UInt32, at offset: UInt64) throws
    func read64(at offset: UInt64) throws -> UInt64
    func write64(_ value: UInt64, at offset: UInt64) throws
    func readBytes(count: Int, at offset: UInt64) throws -> [UInt8]
    func writeBytes(_ bytes: [UInt8], at offset: UInt64) throws
}

/// A named device and its region; state changes by read-modify-write.
public final class MigrationDevice: @unchecked Sendable {
    public let name: String
    public let region: any MigrationRegion
    public init(name: String, region: any MigrationRegion) { self.name = name; self.region = region }
    public func readState() throws -> DeviceState { fatalError("stub") }
    /// Keeps reserved bits 3–31; refuses `SAVING|RESUMING` without touching the device.
    public func setState(_ state: DeviceState) throws { fatalError("stub") }
    public func pendingBytes() throws -> UInt64 { fatalError("stub") }
}

public struct SavedChunk: Sendable, Equatable {
    public var bytes: [UInt8]
    /// pending_bytes as read at step a, before this chunk.
    public var pendingBefore: UInt64
    public init(bytes: [UInt8], pendingBefore: UInt64) { self.bytes = bytes; self.pendingBefore = pendingBefore }
}

/// Save loop (pre-copy and stop-and-copy): pending_bytes → data_offset → data_size → data.
public struct SaveSequence {
    public init(device: MigrationDevice) { fatalError("stub") }
    /// One a–d pass. nil when pending_bytes == 0.
    public mutating func nextChunk() throws -> SavedChunk? { fatalError("stub") }
}

/// Resume loop: data_offset → write data → write data_size, chunk by chunk.
public struct ResumeSequence {
    public init(device: MigrationDevice) { fatalError("stub") }
    public mutating func apply(_ chunk: [UInt8]) throws { fatalError("stub") }
    public var chunksApplied: Int { fatalError("stub") }
    public var bytesApplied: UInt64 { fatalError("stub") }
}

/// What one dirty-bitmap round reported for a PFN range.
public enum DirtyPages: Sendable, Equatable {
    case none
    case all
    /// ceil(pfnCount/8) bytes; bit i (LSB first within each byte) is PFN start+i.
    case bitmap([UInt8])
}

public struct DirtySegment: Sendable, Equatable {
    public var startPFN: UInt64
    public var pageSize: UInt64
    public var pfnCount: UInt64
    public var pages: DirtyPages
    public init(startPFN: UInt64, pageSize: UInt64, pfnCount: UInt64, pages: DirtyPages) {
        self.startPFN = startPFN; self.pageSize = pageSize; self.pfnCount = pfnCount; self.pages = pages
    }
    /// The dirty PFNs this segment reports, ascending.
    public func dirtyPFNs() -> [UInt64] { fatalError("stub") }
}

/// Dirty-page reporting: the seed's in-region query or the IOMMU container ioctl.
public protocol DirtyPageSource: AnyObject {
    func start() throws
    /// Segments covering exactly [startPFN, startPFN+totalPFNs), in order.
    func query(startPFN: UInt64, pageSize: UInt64, totalPFNs: UInt64) throws -> [DirtySegment]
    func stop() throws
}

/// The seed's in-region query, one `DirtyBitmapQuery` loop per call.
public final class RegionDirtyPageSource: DirtyPageSource {
    public init(device: MigrationDevice) { fatalError("stub") }
    public func start() throws {}
    public func query(startPFN: UInt64, pageSize: UInt64, totalPFNs: UInt64) throws -> [DirtySegment] { fatalError("stub") }
    public func stop() throws {}
}

/// Guest RAM mapped from a shared file; pages addressed by PFN.
public final class GuestMemory: @unchecked Sendable {
    public let size: UInt64
    public let pageSize: Int
    public var pageCount: UInt64 { size / UInt64(pageSize) }
    public let path: String?
    /// Maps `path`; with `create`, creates/extends it to `size`. Without `size`, uses the file's size.
    public init(path: String, size: UInt64?, create: Bool, pageSize: Int) throws { fatalError("stub") }
    /// A memfd-backed guest memory (tests, demo).
    public init(anonymousNamed name: String, size: UInt64, pageSize: Int) throws { fatalError("stub") }
    public func readPages(startPFN: UInt64, count: Int) throws -> [UInt8] { fatalError("stub") }
    public func writePages(startPFN: UInt64, bytes: [UInt8]) throws { fatalError("stub") }
    public func zeroPages(startPFN: UInt64, count: Int) throws { fatalError("stub") }
    public func isZeroPage(_ pfn: UInt64) throws -> Bool { fatalError("stub") }
    public func sync() throws { fatalError("stub") }
}

/// Strict in-process vendor driver.
public final class SimulatedDevice: MigrationRegion, @unchecked Sendable {
    public struct Configuration: Sendable {
        public var stateSize: Int
        public var seed: UInt64
        /// Guest pages the device may DMA into (dirties), from the start of guest memory.
        public var dirtyPagesPerStep: Int
        /// State bytes mutated per workload step while RUNNING.
        public var stateBytesPerStep: Int
        public var maxChunkSize: Int
        public init(stateSize: Int = 4 << 20, seed: UInt64 = 1, dirtyPagesPerStep: Int = 64,
                    stateBytesPerStep: Int = 16 << 10, maxChunkSize: Int = 1 << 20) {
            self.stateSize = stateSize; self.seed = seed; self.dirtyPagesPerStep = dirtyPagesPerStep
            self.stateBytesPerStep = stateBytesPerStep; self.maxChunkSize = maxChunkSize
        }
    }
    public init(configuration: Configuration, guestMemory: GuestMemory?) { fatalError("stub") }
    public var regionSize: UInt64 { fatalError("stub") }
    public func read32(at offset: UInt64) throws -> UInt32 { fatalError("stub") }
    public func write32(_ value: UInt32, at offset: UInt64) throws { fatalError("stub") }
    public func read64(at offset: UInt64) throws -> UInt64 { fatalError("stub") }
    public func write64(_ value: UInt64, at offset: UInt64) throws { fatalError("stub") }
    public func readBytes(count: Int, at offset: UInt64) throws -> [UInt8] { fatalError("stub") }
    public func writeBytes(_ bytes: [UInt8], at offset: UInt64) throws { fatalError("stub") }
    /// One step of the running workload: mutates state, DMA-writes and dirties guest pages. No-op unless RUNNING.
    public func workloadStep() { fatalError("stub") }
    /// The device's current internal state (for comparing source and destination).
    public func stateSnapshot() -> [UInt8] { fatalError("stub") }
    /// The current device_state field.
    public var currentState: DeviceState { fatalError("stub") }
    /// Arms a fault; it fires once (the vendor driver returns EIO or rejects).
    public func inject(_ fault: SimulatedFault) { fatalError("stub") }
}

public enum SimulatedFault: Sendable, Equatable {
    /// The device_state write to exactly this state fails.
    case failTransition(to: DeviceState)
    /// The data read of save chunk number `chunk` (0-based, counted across phases) fails.
    case failSaveRead(chunk: Int)
    /// The data_size write that commits resume chunk number `chunk` is rejected.
    case rejectResumeData(chunk: Int)
}
