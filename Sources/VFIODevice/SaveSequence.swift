public struct SavedChunk: Sendable, Equatable {
    public var bytes: [UInt8]
    /// pending_bytes as read at step a, before this chunk.
    public var pendingBefore: UInt64
    public init(bytes: [UInt8], pendingBefore: UInt64) { self.bytes = bytes; self.pendingBefore = pendingBefore }
}

/// A chunk the driver staged (steps a–c done): where it is and how large.
/// Its data (step d) can be read in pieces, so a chunk as large as the data
/// section never has to sit in memory at once.
public struct StagedChunk: Sendable, Equatable {
    public let dataOffset: UInt64
    public let size: UInt64
    /// pending_bytes as read at step a, before this chunk.
    public let pendingBefore: UInt64
    /// 0-based index of the chunk in this save session.
    public let index: Int
}

/// Save loop (pre-copy and stop-and-copy): pending_bytes → data_offset → data_size → data.
///
/// `stageChunk()` is steps a–c of the header, `read(_:at:count:)` step d (whole
/// or in pieces); processing (e) and looping (f) are the caller's. The same type
/// serves `SAVING|RUNNING` (a nil means "nothing now", try again next iteration)
/// and `SAVING` (a nil means the stream is complete).
public struct SaveSequence {
    public let device: MigrationDevice
    /// Chunks staged so far (steps a–c; the last one may not have been read yet).
    public private(set) var chunksStaged: Int = 0
    /// Device-data bytes staged so far.
    public private(set) var bytesStaged: UInt64 = 0

    public init(device: MigrationDevice) { self.device = device }

    /// Steps a–c. nil when pending_bytes == 0.
    public mutating func stageChunk() throws(DeviceError) -> StagedChunk? {
        if let v2 = device.v2 {
            // v2: up to chunkBytes from the data_fd; nil = nothing now (PRE_COPY) or the end (STOP_COPY).
            guard let chunk = try v2.stageChunk(index: chunksStaged) else { return nil }
            chunksStaged += 1
            bytesStaged += chunk.size
            return chunk
        }
        let region = device.region
        let pending = try region.read(.pendingBytes)                    // a
        guard pending > 0 else { return nil }
        let dataOffset = try region.read(.dataOffset)                   // b: driver stages data
        let dataSize = try region.read(.dataSize)                       // c
        // Check the driver's numbers before trusting them with a read.
        guard dataOffset >= MigrationInfo.size else {
            throw DeviceError.protocolViolation(step: "save data_offset", detail: "data_offset \(dataOffset) lies inside the 64-byte header")
        }
        let (end, overflow) = dataOffset.addingReportingOverflow(dataSize)
        guard !overflow, end <= region.regionSize else {
            throw DeviceError.protocolViolation(step: "save data_size", detail: "data [\(dataOffset), +\(dataSize)) extends past the \(region.regionSize)-byte region")
        }
        let chunk = StagedChunk(dataOffset: dataOffset, size: dataSize, pendingBefore: pending, index: chunksStaged)
        chunksStaged += 1
        bytesStaged += dataSize
        return chunk
    }

    /// Step d for `count` bytes at `offset` within the staged chunk.
    public func read(_ chunk: StagedChunk, at offset: UInt64, count: Int) throws(DeviceError) -> [UInt8] {
        guard count >= 0, offset <= chunk.size, UInt64(count) <= chunk.size - offset else {
            throw DeviceError.invalidArgument(operation: "read save chunk \(chunk.index)", detail: "\(count) bytes at \(offset) lie outside its \(chunk.size) bytes")
        }
        guard count > 0 else { return [] }
        if let v2 = device.v2 { return try v2.stagedBytes(chunk, at: offset, count: count) }
        return try device.region.readBytes(count: count, at: chunk.dataOffset + offset)   // d
    }

    /// Steps a–d in one, the chunk whole in memory (small chunks, tests).
    public mutating func nextChunk() throws(DeviceError) -> SavedChunk? {
        guard let chunk = try stageChunk() else { return nil }
        guard let count = Int(exactly: chunk.size) else {
            throw DeviceError.invalidArgument(operation: "read save chunk \(chunk.index)", detail: "\(chunk.size) bytes do not fit in memory; read it in pieces")
        }
        return SavedChunk(bytes: try read(chunk, at: 0, count: count), pendingBefore: chunk.pendingBefore)
    }
}
