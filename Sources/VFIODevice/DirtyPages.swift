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
    public func dirtyPFNs() -> [UInt64] {
        switch pages {
        case .none:
            return []
        case .all:
            return Array(startPFN..<(startPFN + pfnCount))
        case .bitmap(let bytes):
            var result: [UInt64] = []
            for (byteIndex, byte) in bytes.enumerated() where byte != 0 {
                for bit in 0..<8 where byte & (1 << bit) != 0 {
                    let i = UInt64(byteIndex * 8 + bit)
                    if i < pfnCount { result.append(startPFN + i) }
                }
            }
            return result
        }
    }

    /// Number of PFNs reported dirty.
    public var dirtyCount: UInt64 {
        switch pages {
        case .none: return 0
        case .all: return pfnCount
        case .bitmap: return UInt64(dirtyPFNs().count)
        }
    }
}

/// Bitmap helpers shared by the region query, the IOMMU form and the simulator.
public enum Bitmap {
    public static func byteCount(bits: UInt64) -> Int { Int((bits + 7) / 8) }

    /// Clears bits at index ≥ `bits` so a bitmap never reports PFNs past its range.
    public static func masked(_ bytes: [UInt8], bits: UInt64) -> [UInt8] {
        var out = Array(bytes.prefix(byteCount(bits: bits)))
        let rest = Int(bits % 8)
        if rest != 0, !out.isEmpty { out[out.count - 1] &= UInt8((1 << rest) - 1) }
        return out
    }
}

/// Dirty-page reporting: the seed's in-region query or the IOMMU container ioctl.
public protocol DirtyPageSource: AnyObject {
    func start() throws
    /// Segments covering exactly [startPFN, startPFN+totalPFNs), in order.
    func query(startPFN: UInt64, pageSize: UInt64, totalPFNs: UInt64) throws -> [DirtySegment]
    func stop() throws
}

/// The seed's in-region query, one `DirtyBitmapQuery` loop per call. Start and stop
/// are no-ops: in this protocol the vendor driver tracks while SAVING is set.
public final class RegionDirtyPageSource: DirtyPageSource {
    public let device: MigrationDevice
    /// Rounds (copied_pfns reads) of the last query, for statistics.
    public private(set) var lastRounds = 0

    public init(device: MigrationDevice) { self.device = device }
    public func start() throws {}
    public func query(startPFN: UInt64, pageSize: UInt64, totalPFNs: UInt64) throws -> [DirtySegment] {
        var q = DirtyBitmapQuery(device: device)
        let segments = try q.run(startPFN: startPFN, pageSize: pageSize, totalPFNs: totalPFNs)
        lastRounds = q.rounds
        return segments
    }
    public func stop() throws {}
}
