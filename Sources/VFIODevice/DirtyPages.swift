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

    /// The runs of consecutive dirty PFNs, ascending, walked straight out of the
    /// bitmap a 64-bit word at a time: no per-PFN array, whatever the range.
    public var dirtyRuns: DirtyRuns { DirtyRuns(segment: self) }

    /// Number of PFNs reported dirty (a popcount of the bitmap).
    public var dirtyCount: UInt64 {
        switch pages {
        case .none: return 0
        case .all: return pfnCount
        case .bitmap(let bytes):
            let set = Bitmap.masked(bytes, bits: pfnCount).reduce(0) { $0 + $1.nonzeroBitCount }
            return UInt64(set)
        }
    }

    /// This segment cut into pieces of at most `maxPFNs` PFNs (a multiple of 8, so a
    /// bitmap splits on byte boundaries), in order. NONE and ALL stay NONE and ALL.
    public func split(maxPFNs: UInt64) -> [DirtySegment] {
        precondition(maxPFNs >= 8 && maxPFNs % 8 == 0, "split size \(maxPFNs) must be a positive multiple of 8")
        guard pfnCount > maxPFNs else { return [self] }
        var pieces: [DirtySegment] = []
        var offset: UInt64 = 0
        while offset < pfnCount {
            let count = min(maxPFNs, pfnCount - offset)
            var piece = DirtySegment(startPFN: startPFN + offset, pageSize: pageSize, pfnCount: count, pages: pages)
            if case .bitmap(let bytes) = pages {
                let from = Int(offset / 8)
                let to = min(bytes.count, from + Bitmap.byteCount(bits: count))
                piece.pages = .bitmap(Bitmap.masked(from < to ? Array(bytes[from..<to]) : [], bits: count))
            }
            pieces.append(piece)
            offset += count
        }
        return pieces
    }
}

/// A run of consecutive PFNs.
public struct PFNRun: Sendable, Equatable {
    public var startPFN: UInt64
    public var count: UInt64
    public init(startPFN: UInt64, count: UInt64) { self.startPFN = startPFN; self.count = count }
}

/// The dirty runs of one segment. A bitmap is read eight bytes at a time: a clean
/// word is skipped with one compare, and a run's ends are found by counting
/// trailing zeros, so memory is the bitmap itself and time is its length in words.
public struct DirtyRuns: Sequence, IteratorProtocol {
    private let segment: DirtySegment
    private let bytes: [UInt8]
    private var bit: UInt64 = 0    // next bit index to look at

    init(segment: DirtySegment) {
        self.segment = segment
        if case .bitmap(let b) = segment.pages { bytes = b } else { bytes = [] }
        if case .none = segment.pages { bit = segment.pfnCount }
    }

    public mutating func next() -> PFNRun? {
        let total = segment.pfnCount
        guard bit < total else { return nil }
        if case .all = segment.pages {
            defer { bit = total }
            return PFNRun(startPFN: segment.startPFN, count: total)
        }
        guard let first = nextBit(from: bit, set: true), first < total else { bit = total; return nil }
        let end = Swift.min(nextBit(from: first, set: false) ?? total, total)
        bit = end
        return PFNRun(startPFN: segment.startPFN + first, count: end - first)
    }

    /// Index of the first bit ≥ `from` that is set (or clear), nil past the bitmap.
    private func nextBit(from: UInt64, set: Bool) -> UInt64? {
        var index = Int(from / 64)
        var w = word(index) ^ (set ? 0 : ~0)
        w &= ~0 << (from % 64)                       // ignore bits below `from`
        let words = (bytes.count + 7) / 8
        while w == 0 {
            index += 1
            guard index < words else { return nil }
            w = word(index) ^ (set ? 0 : ~0)
        }
        return UInt64(index) * 64 + UInt64(w.trailingZeroBitCount)
    }

    /// Bitmap word `index`, little-endian; bytes past the end read as 0.
    private func word(_ index: Int) -> UInt64 {
        let base = index * 8
        var w: UInt64 = 0
        for i in 0..<Swift.min(8, Swift.max(0, bytes.count - base)) { w |= UInt64(bytes[base + i]) << (8 * UInt64(i)) }
        return w
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
    func start() throws(DeviceError)
    /// Segments covering exactly [startPFN, startPFN+totalPFNs), in order.
    func query(startPFN: UInt64, pageSize: UInt64, totalPFNs: UInt64) throws(DeviceError) -> [DirtySegment]
    func stop() throws(DeviceError)
}

/// The seed's in-region query, one `DirtyBitmapQuery` loop per call. Start and stop
/// are no-ops: in this protocol the vendor driver tracks while SAVING is set.
public final class RegionDirtyPageSource: DirtyPageSource {
    public let device: MigrationDevice
    /// Rounds (copied_pfns reads) of the last query, for statistics.
    public private(set) var lastRounds = 0

    public init(device: MigrationDevice) { self.device = device }
    public func start() throws(DeviceError) {}
    public func query(startPFN: UInt64, pageSize: UInt64, totalPFNs: UInt64) throws(DeviceError) -> [DirtySegment] {
        var q = DirtyBitmapQuery(device: device)
        let segments = try q.run(startPFN: startPFN, pageSize: pageSize, totalPFNs: totalPFNs)
        lastRounds = q.rounds
        return segments
    }
    public func stop() throws(DeviceError) {}
}
