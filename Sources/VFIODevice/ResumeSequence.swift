/// Resume loop: data_offset → write data → write data_size, chunk by chunk.
///
/// Chunks must be applied in the order and with the boundaries the source read them.
public struct ResumeSequence {
    public let device: MigrationDevice
    private var applied = 0
    private var bytes: UInt64 = 0

    public init(device: MigrationDevice) { self.device = device }

    public mutating func apply(_ chunk: [UInt8]) throws {
        let region = device.region
        let dataOffset = try region.read(.dataOffset)                   // a
        guard dataOffset >= MigrationInfo.size else {
            throw DeviceError.protocolViolation(step: "resume data_offset", detail: "data_offset \(dataOffset) lies inside the 64-byte header")
        }
        let (end, overflow) = dataOffset.addingReportingOverflow(UInt64(chunk.count))
        guard !overflow, end <= region.regionSize else {
            throw DeviceError.protocolViolation(step: "resume chunk \(applied)", detail: "\(chunk.count) bytes at data_offset \(dataOffset) do not fit the \(region.regionSize)-byte region")
        }
        if !chunk.isEmpty { try region.writeBytes(chunk, at: dataOffset) }   // b
        try region.write(UInt64(chunk.count), to: .dataSize)           // c: driver consumes
        applied += 1
        bytes += UInt64(chunk.count)
    }

    public var chunksApplied: Int { applied }
    public var bytesApplied: UInt64 { bytes }
}
