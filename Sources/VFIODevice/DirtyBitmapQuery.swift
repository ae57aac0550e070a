/// The header's dirty-bitmap loop:
/// a. write start_pfn, page_size, total_pfns; b. read copied_pfns (NONE → done,
/// ALL → rest dirty, done, else a count); c. read data_offset; d. read
/// ceil(count/8) bitmap bytes there; e. repeat with start advanced and total
/// reduced until the whole range is covered.
public struct DirtyBitmapQuery {
    public let device: MigrationDevice
    /// copied_pfns reads in the last `run`.
    public private(set) var rounds = 0

    public init(device: MigrationDevice) { self.device = device }

    /// Segments covering exactly [startPFN, startPFN+totalPFNs), in order.
    public mutating func run(startPFN: UInt64, pageSize: UInt64, totalPFNs: UInt64) throws(DeviceError) -> [DirtySegment] {
        rounds = 0
        guard totalPFNs > 0 else { return [] }
        guard pageSize > 0, pageSize & (pageSize - 1) == 0 else {
            throw DeviceError.invalidArgument(operation: "dirty bitmap query", detail: "page size \(pageSize) is not a power of two")
        }
        guard !startPFN.addingReportingOverflow(totalPFNs).overflow else {
            throw DeviceError.invalidArgument(operation: "dirty bitmap query", detail: "PFN range [\(startPFN), +\(totalPFNs)) overflows")
        }
        let region = device.region
        var segments: [DirtySegment] = []
        var start = startPFN
        var remaining = totalPFNs
        while remaining > 0 {
            try region.write(start, to: .startPFN)                      // a
            try region.write(pageSize, to: .pageSize)
            try region.write(remaining, to: .totalPFNs)
            let copied = try region.read(.copiedPFNs)                  // b
            rounds += 1
            switch copied {
            case MigrationInfo.dirtyPFNsNone:
                segments.append(DirtySegment(startPFN: start, pageSize: pageSize, pfnCount: remaining, pages: .none))
                return segments
            case MigrationInfo.dirtyPFNsAll:
                segments.append(DirtySegment(startPFN: start, pageSize: pageSize, pfnCount: remaining, pages: .all))
                return segments
            default:
                guard copied <= remaining else {
                    throw DeviceError.protocolViolation(step: "copied_pfns", detail: "driver reported \(copied) PFNs for a request of \(remaining)")
                }
                let dataOffset = try region.read(.dataOffset)           // c
                let count = Bitmap.byteCount(bits: copied)
                let (end, overflow) = dataOffset.addingReportingOverflow(UInt64(count))
                guard dataOffset >= MigrationInfo.size, !overflow, end <= region.regionSize else {
                    throw DeviceError.protocolViolation(step: "bitmap data_offset", detail: "\(count) bitmap bytes at \(dataOffset) do not fit the \(region.regionSize)-byte region")
                }
                let bytes = try region.readBytes(count: count, at: dataOffset)   // d
                segments.append(DirtySegment(startPFN: start, pageSize: pageSize, pfnCount: copied,
                                             pages: .bitmap(Bitmap.masked(bytes, bits: copied))))
                start += copied                                         // e
                remaining -= copied
            }
        }
        return segments
    }
}
