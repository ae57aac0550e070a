import Glibc

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
