/// Resume loop: data_offset → write data → write data_size, chunk by chunk.
///
/// Chunks must be applied in the order and with the boundaries the source read
/// them. A chunk may arrive in pieces: `begin` (step a, and the check that the
/// whole chunk fits before any of it is written), `write` per piece at increasing
/// offsets (b), `finish` (c, one data_size write of the whole chunk).
public struct ResumeSequence {
    public let device: MigrationDevice
    private var applied = 0
    private var bytes: UInt64 = 0
    private var open: OpenChunk?

    private struct OpenChunk {
        var dataOffset: UInt64
        var length: UInt64
        var written: UInt64
    }

    public init(device: MigrationDevice) { self.device = device }

    /// Step a for a chunk of `length` bytes; throws `chunkDoesNotFit` (nothing
    /// written) when it would extend past the region.
    public mutating func begin(length: UInt64) throws(DeviceError) {
        guard open == nil else { throw misuse("a chunk is already open") }
        if device.v2 != nil {
            // v2: a stream without driver chunks; the wire's chunk only counts bytes here.
            open = OpenChunk(dataOffset: 0, length: length, written: 0)
            return
        }
        let region = device.region
        let dataOffset = try region.read(.dataOffset)                   // a
        guard dataOffset >= MigrationInfo.size else {
            throw DeviceError.protocolViolation(step: "resume data_offset", detail: "data_offset \(dataOffset) lies inside the 64-byte header")
        }
        let (end, overflow) = dataOffset.addingReportingOverflow(length)
        guard !overflow, end <= region.regionSize else {
            throw DeviceError.chunkDoesNotFit(chunk: applied, bytes: length, dataOffset: dataOffset, regionSize: region.regionSize)
        }
        open = OpenChunk(dataOffset: dataOffset, length: length, written: 0)
    }

    /// Step b for the next piece, right after the previous one.
    public mutating func write(_ piece: [UInt8]) throws(DeviceError) {
        guard var chunk = open else { throw misuse("no chunk is open") }
        guard UInt64(piece.count) <= chunk.length - chunk.written else {
            throw misuse("a \(piece.count)-byte piece exceeds the \(chunk.length - chunk.written) bytes the chunk still lacks")
        }
        if let v2 = device.v2 {
            try v2.write(piece)                                          // bytes in order, any segmentation
        } else if !piece.isEmpty {
            try device.region.writeBytes(piece, at: chunk.dataOffset + chunk.written)   // b
        }
        chunk.written += UInt64(piece.count)
        open = chunk
    }

    /// Step c: the driver consumes the whole chunk.
    public mutating func finish() throws(DeviceError) {
        guard let chunk = open, chunk.written == chunk.length else {
            throw misuse(open.map { "\($0.written) of \($0.length) bytes written" } ?? "no chunk is open")
        }
        open = nil   // consumed or refused by the driver: either way the chunk is over
        if device.v2 == nil {
            try device.region.write(chunk.length, to: .dataSize)      // c: driver consumes
        }
        applied += 1
        bytes += chunk.length
    }

    /// A whole chunk: steps a–c.
    public mutating func apply(_ chunk: [UInt8]) throws(DeviceError) {
        try begin(length: UInt64(chunk.count))
        try write(chunk)
        try finish()
    }

    /// Bytes the open chunk still lacks; nil when no chunk is open.
    public var missingBytes: UInt64? { open.map { $0.length - $0.written } }

    public var chunksApplied: Int { applied }
    public var bytesApplied: UInt64 { bytes }

    private func misuse(_ detail: String) -> DeviceError {
        .invalidArgument(operation: "resume chunk \(applied) of device \(device.name)", detail: detail)
    }
}
