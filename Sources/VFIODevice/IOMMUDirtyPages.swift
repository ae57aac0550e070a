internal import CVFIO
import SystemPackage

/// Pure builders and parsers for the Linux 5.8 `VFIO_IOMMU_DIRTY_PAGES` argument:
/// `struct vfio_iommu_type1_dirty_bitmap` { argsz u32, flags u32, data[] }, with, for
/// GET_BITMAP, `struct vfio_iommu_type1_dirty_bitmap_get` { iova u64, size u64,
/// `struct vfio_bitmap` { pgsize u64, size u64, data pointer } } in data[].
public enum IOMMUDirtyBitmap {
    public static let flagStart: UInt32 = 1 << 0
    public static let flagStop: UInt32 = 1 << 1
    public static let flagGetBitmap: UInt32 = 1 << 2
    public static let headerSize = 8
    public static let getSize = 40
    /// argsz for GET_BITMAP: header and the get struct, excluding the bitmap itself.
    public static let getRequestSize = headerSize + getSize

    public struct GetBitmapRequest: Sendable, Equatable {
        public var argsz: UInt32
        public var flags: UInt32
        public var iova: UInt64
        public var size: UInt64
        public var pageSize: UInt64
        public var bitmapSize: UInt64
        public var bitmapAddress: UInt64
    }

    /// START or STOP: just the 8-byte header.
    public static func control(flags: UInt32) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: headerSize)
        VFIORegionInfo.put(&b, 0, UInt64(headerSize), 4)
        VFIORegionInfo.put(&b, 4, UInt64(flags), 4)
        return b
    }

    /// Bitmap bytes the kernel wants for `pfnCount` pages: whole u64 words, zeroed.
    public static func bitmapBufferSize(pfnCount: UInt64) -> Int { Int((pfnCount + 63) / 64 * 8) }

    public static func getBitmapRequest(iova: UInt64, size: UInt64, pageSize: UInt64, bitmapSize: UInt64, bitmapAddress: UInt64) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: getRequestSize)
        VFIORegionInfo.put(&b, 0, UInt64(getRequestSize), 4)
        VFIORegionInfo.put(&b, 4, UInt64(flagGetBitmap), 4)
        VFIORegionInfo.put(&b, 8, iova, 8)
        VFIORegionInfo.put(&b, 16, size, 8)
        VFIORegionInfo.put(&b, 24, pageSize, 8)
        VFIORegionInfo.put(&b, 32, bitmapSize, 8)
        VFIORegionInfo.put(&b, 40, bitmapAddress, 8)
        return b
    }

    public static func parseGetBitmapRequest(_ b: [UInt8]) throws(DeviceError) -> GetBitmapRequest {
        guard b.count >= getRequestSize else {
            throw DeviceError.invalidArgument(operation: "parse vfio_iommu_type1_dirty_bitmap", detail: "\(b.count) bytes, \(getRequestSize) needed")
        }
        let le = VFIOCapabilityChain.le
        let r = GetBitmapRequest(argsz: UInt32(le(b, 0, 4)), flags: UInt32(le(b, 4, 4)), iova: le(b, 8, 8), size: le(b, 16, 8),
                                 pageSize: le(b, 24, 8), bitmapSize: le(b, 32, 8), bitmapAddress: le(b, 40, 8))
        guard r.flags == flagGetBitmap, r.argsz >= UInt32(getRequestSize) else {
            throw DeviceError.invalidArgument(operation: "parse vfio_iommu_type1_dirty_bitmap", detail: "flags 0x\(String(r.flags, radix: 16)) / argsz \(r.argsz) is not a GET_BITMAP request")
        }
        return r
    }

    /// The kernel's bitmap (bit i of the u64 array = page i; little-endian, so byte
    /// order equals the region form's LSB-first bytes) as one segment; all-clear and
    /// all-set collapse to `.none` / `.all` like the region query's answers.
    public static func segment(fromBitmap bitmap: [UInt8], startPFN: UInt64, pageSize: UInt64, pfnCount: UInt64) throws(DeviceError) -> DirtySegment {
        let needed = Bitmap.byteCount(bits: pfnCount)
        guard bitmap.count >= needed else {
            throw DeviceError.invalidArgument(operation: "IOMMU dirty bitmap", detail: "\(bitmap.count) bytes for \(pfnCount) pages")
        }
        let bytes = Bitmap.masked(bitmap, bits: pfnCount)
        let set = bytes.reduce(0) { $0 + $1.nonzeroBitCount }
        let pages: DirtyPages = set == 0 ? .none : (UInt64(set) == pfnCount ? .all : .bitmap(bytes))
        return DirtySegment(startPFN: startPFN, pageSize: pageSize, pfnCount: pfnCount, pages: pages)
    }
}

/// Dirty pages from the IOMMU container (Linux 5.8+ `VFIO_IOMMU_DIRTY_PAGES`). Guest
/// PFN p is IOVA `iovaBase + p * pageSize`; the range asked must lie within DMA
/// mappings of the container, as the kernel requires.
public final class IOMMUDirtyPageSource: DirtyPageSource {
    public let containerFD: Int32
    public let iovaBase: UInt64
    private let kernel: VFIOKernel
    /// Keeps the container descriptor open (an `InheritedContainer`); nil when the caller does.
    private let owner: (any AnyObject & Sendable)?

    public convenience init(containerFD: Int32, iovaBase: UInt64 = 0, kernel: VFIOKernel = .live) {
        self.init(containerFD: containerFD, iovaBase: iovaBase, owner: nil, kernel: kernel)
    }

    init(containerFD: Int32, iovaBase: UInt64, owner: (any AnyObject & Sendable)?, kernel: VFIOKernel = .live) {
        self.containerFD = containerFD
        self.iovaBase = iovaBase
        self.owner = owner
        self.kernel = kernel
    }

    public func start() throws(DeviceError) { try control(IOMMUDirtyBitmap.flagStart, "START") }
    public func stop() throws(DeviceError) { try control(IOMMUDirtyBitmap.flagStop, "STOP") }

    private func control(_ flags: UInt32, _ name: String) throws(DeviceError) {
        var arg = IOMMUDirtyBitmap.control(flags: flags)
        try dirtyPagesIoctl(&arg, name)
    }

    private func dirtyPagesIoctl(_ arg: inout [UInt8], _ name: String) throws(DeviceError) {
        _ = try DeviceError.systemCall("VFIO_IOMMU_DIRTY_PAGES \(name)", path: nil) { () throws(Errno) in
            try arg.withMutableBytes { (buffer) throws(Errno) in
                try kernel.ioctl(containerFD, UInt(CVFIO_IOMMU_DIRTY_PAGES), .buffer(buffer))
            }
        }
    }

    public func query(startPFN: UInt64, pageSize: UInt64, totalPFNs: UInt64) throws(DeviceError) -> [DirtySegment] {
        guard totalPFNs > 0 else { return [] }
        guard pageSize > 0, pageSize & (pageSize - 1) == 0 else {
            throw DeviceError.invalidArgument(operation: "IOMMU dirty bitmap", detail: "page size \(pageSize) is not a power of two")
        }
        let (bytes, o1) = totalPFNs.multipliedReportingOverflow(by: pageSize)
        let (offset, o2) = startPFN.multipliedReportingOverflow(by: pageSize)
        let (iova, o3) = iovaBase.addingReportingOverflow(offset)
        guard !o1, !o2, !o3, totalPFNs <= 1 << 36 else {
            throw DeviceError.invalidArgument(operation: "IOMMU dirty bitmap", detail: "PFN range [\(startPFN), +\(totalPFNs)) overflows the IOVA space")
        }
        var bitmap = [UInt8](repeating: 0, count: IOMMUDirtyBitmap.bitmapBufferSize(pfnCount: totalPFNs))
        try bitmap.withMutableBytes { (bits) throws(DeviceError) in
            // The request carries the bitmap's address: the kernel writes it while `bits` is pinned here.
            var arg = IOMMUDirtyBitmap.getBitmapRequest(
                iova: iova, size: bytes, pageSize: pageSize, bitmapSize: UInt64(bits.count),
                bitmapAddress: UInt64(UInt(bitPattern: bits.baseAddress)))
            try dirtyPagesIoctl(&arg, "GET_BITMAP")
        }
        return [try IOMMUDirtyBitmap.segment(fromBitmap: bitmap, startPFN: startPFN, pageSize: pageSize, pfnCount: totalPFNs)]
    }
}
