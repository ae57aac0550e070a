public struct SavedChunk: Sendable, Equatable {
    public var bytes: [UInt8]
    /// pending_bytes as read at step a, before this chunk.
    public var pendingBefore: UInt64
    public init(bytes: [UInt8], pendingBefore: UInt64) { self.bytes = bytes; self.pendingBefore = pendingBefore }
}

/// Save loop (pre-copy and stop-and-copy): pending_bytes → data_offset → data_size → data.
///
/// One `nextChunk()` is exactly steps a–d of the header; processing (e) and looping
/// (f) are the caller's. The same type serves `SAVING|RUNNING` (a nil means "nothing
/// now", try again next iteration) and `SAVING` (a nil means the stream is complete).
public struct SaveSequence {
    public let device: MigrationDevice
    /// Chunks returned so far.
    public private(set) var chunksRead: Int = 0
    /// Device-data bytes returned so far.
    public private(set) var bytesRead: UInt64 = 0

    public init(device: MigrationDevice) { self.device = device }

    /// One a–d pass. nil when pending_bytes == 0.
    public mutating func nextChunk() throws -> SavedChunk? {
        let region = device.region
        let pending = try region.read(.pendingBytes)                    // a
        guard pending > 0 else { return nil }
        let dataOffset = try region.read(.dataOffset)                   // b: driver stages data
        let dataSize = try region.read(.dataSize)                       // c
        // Check the driver's numbers before trusting them with an allocation.
        guard dataOffset >= MigrationInfo.size else {
            throw DeviceError.protocolViolation(step: "save data_offset", detail: "data_offset \(dataOffset) lies inside the 64-byte header")
        }
        let (end, overflow) = dataOffset.addingReportingOverflow(dataSize)
        guard !overflow, end <= region.regionSize else {
            throw DeviceError.protocolViolation(step: "save data_size", detail: "data [\(dataOffset), +\(dataSize)) extends past the \(region.regionSize)-byte region")
        }
        let bytes = dataSize == 0 ? [] : try region.readBytes(count: Int(dataSize), at: dataOffset)   // d
        chunksRead += 1
        bytesRead += dataSize
        return SavedChunk(bytes: bytes, pendingBefore: pending)
    }
}
