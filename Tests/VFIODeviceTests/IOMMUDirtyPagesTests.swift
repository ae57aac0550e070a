import CVFIO
import Glibc
import TestSupport
import SystemPackage
import Testing
@testable import VFIODevice
@testable import VFIOSimulator

@Suite struct IOMMUDirtyPagesTests {
    @Test func buffersMatchTheKernelLayout() throws {
        #expect(Int(CVFIO_SIZEOF_DIRTY_BITMAP) == IOMMUDirtyBitmap.headerSize)
        #expect(Int(CVFIO_SIZEOF_DIRTY_BITMAP_GET) == IOMMUDirtyBitmap.getSize)
        #expect(CVFIO_IOMMU_DIRTY_PAGES_FLAG_START == IOMMUDirtyBitmap.flagStart)
        #expect(CVFIO_IOMMU_DIRTY_PAGES_FLAG_STOP == IOMMUDirtyBitmap.flagStop)
        #expect(CVFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP == IOMMUDirtyBitmap.flagGetBitmap)
        #expect(IOMMUDirtyBitmap.control(flags: IOMMUDirtyBitmap.flagStart) == [8, 0, 0, 0, 1, 0, 0, 0])
        #expect(IOMMUDirtyBitmap.control(flags: IOMMUDirtyBitmap.flagStop) == [8, 0, 0, 0, 2, 0, 0, 0])

        let b = IOMMUDirtyBitmap.getBitmapRequest(iova: 0x1_0000_0000, size: 0x20_0000, pageSize: 4096, bitmapSize: 64,
                                                  bitmapAddress: 0x7F00_DEAD_B000)
        #expect(b.count == 48)
        #expect(Array(b[0..<8]) == [48, 0, 0, 0, 4, 0, 0, 0])
        #expect(Array(b[8..<16]) == [0, 0, 0, 0, 1, 0, 0, 0])
        #expect(Array(b[40..<48]) == [0x00, 0xB0, 0xAD, 0xDE, 0x00, 0x7F, 0, 0])
        let r = try IOMMUDirtyBitmap.parseGetBitmapRequest(b)
        #expect(r == .init(argsz: 48, flags: 4, iova: 0x1_0000_0000, size: 0x20_0000, pageSize: 4096, bitmapSize: 64, bitmapAddress: 0x7F00_DEAD_B000))
        #expect(thrownError { try IOMMUDirtyBitmap.parseGetBitmapRequest(Array(b.prefix(40))) }?.kind == "invalidArgument")
        #expect(thrownError { try IOMMUDirtyBitmap.parseGetBitmapRequest(IOMMUDirtyBitmap.control(flags: 1) + [UInt8](repeating: 0, count: 40)) }?.kind == "invalidArgument")
        #expect(IOMMUDirtyBitmap.bitmapBufferSize(pfnCount: 1) == 8)
        #expect(IOMMUDirtyBitmap.bitmapBufferSize(pfnCount: 64) == 8)
        #expect(IOMMUDirtyBitmap.bitmapBufferSize(pfnCount: 65) == 16)
    }

    @Test func bitmapsBecomeTheSameSegmentShape() throws {
        let partial = try IOMMUDirtyBitmap.segment(fromBitmap: [0b0000_0101, 0, 0xFF, 0, 0, 0, 0, 0], startPFN: 100, pageSize: 4096, pfnCount: 20)
        #expect(partial == DirtySegment(startPFN: 100, pageSize: 4096, pfnCount: 20, pages: .bitmap([0b101, 0, 0x0F])))
        #expect(partial.dirtyPFNs() == [100, 102, 116, 117, 118, 119])
        #expect(try IOMMUDirtyBitmap.segment(fromBitmap: [0, 0, 0, 0, 0, 0, 0, 0], startPFN: 0, pageSize: 4096, pfnCount: 10).pages == .none)
        #expect(try IOMMUDirtyBitmap.segment(fromBitmap: [0xFF, 0x03, 0xF0, 0, 0, 0, 0, 0], startPFN: 0, pageSize: 4096, pfnCount: 10).pages == .all)
        #expect(thrownError { try IOMMUDirtyBitmap.segment(fromBitmap: [0], startPFN: 0, pageSize: 4096, pfnCount: 10) }?.kind == "invalidArgument")
    }

    @Test func sourceTalksToAFakeKernel() throws {
        let recorded = Locked<[[UInt8]]>([])
        let dirty: Set<UInt64> = [3, 64, 65, 199]
        let source = IOMMUDirtyPageSource(containerFD: 77, iovaBase: 0x4000_0000, kernel: .ioctlOnly { fd, request, arg in
            guard fd == 77, request == UInt(CVFIO_IOMMU_DIRTY_PAGES) else { return -EINVAL }
            let flags = arg.load(fromByteOffset: 4, as: UInt32.self)
            if flags != IOMMUDirtyBitmap.flagGetBitmap {
                recorded.withLock { $0.append(Array(UnsafeRawBufferPointer(start: arg, count: 8))) }
                return 0
            }
            let bytes = Array(UnsafeRawBufferPointer(start: arg, count: 48))
            recorded.withLock { $0.append(bytes) }
            guard let r = try? IOMMUDirtyBitmap.parseGetBitmapRequest(bytes), r.size % r.pageSize == 0 else { return -EINVAL }
            let bitmap = UnsafeMutableRawPointer(bitPattern: UInt(r.bitmapAddress))!
            let first = (r.iova - 0x4000_0000) / r.pageSize
            for pfn in dirty where pfn >= first && pfn < first + r.size / r.pageSize {
                let i = Int(pfn - first)
                guard UInt64(i / 8) < r.bitmapSize else { return -EINVAL }
                bitmap.storeBytes(of: bitmap.load(fromByteOffset: i / 8, as: UInt8.self) | UInt8(1 << (i % 8)), toByteOffset: i / 8, as: UInt8.self)
            }
            return 0
        })
        try source.start()
        let segments = try source.query(startPFN: 60, pageSize: 4096, totalPFNs: 140)
        try source.stop()
        let seen = recorded.current
        #expect(segments.count == 1 && segments[0].startPFN == 60 && segments[0].pfnCount == 140)
        #expect(segments[0].dirtyPFNs() == [64, 65, 199])
        #expect(seen.count == 3)
        #expect(seen[0] == IOMMUDirtyBitmap.control(flags: 1) && seen[2] == IOMMUDirtyBitmap.control(flags: 2))
        let r = try IOMMUDirtyBitmap.parseGetBitmapRequest(seen[1])
        #expect(r.iova == 0x4000_0000 + 60 * 4096 && r.size == 140 * 4096 && r.pageSize == 4096 && r.bitmapSize == 24)

        let failing = IOMMUDirtyPageSource(containerFD: 1, iovaBase: 0, kernel: .ioctlOnly { _, _, _ in -ENOTTY })
        #expect(thrownError { try failing.start() } == .systemCall("VFIO_IOMMU_DIRTY_PAGES START", path: nil, errno: .inappropriateIOCTLForDevice))
        #expect(thrownError { try failing.query(startPFN: 0, pageSize: 4096, totalPFNs: 8) }?.errnoCode == .inappropriateIOCTLForDevice)
        #expect(thrownError { try failing.query(startPFN: 0, pageSize: 3000, totalPFNs: 8) }?.kind == "invalidArgument")
        #expect(try failing.query(startPFN: 0, pageSize: 4096, totalPFNs: 0).isEmpty)
    }

    @Test func bothSourcesCoverTheAskedRange() throws {
        // The region form on the simulator and the IOMMU form on a fake kernel report
        // the same dirty pages over the same range.
        let mem = try makeGuest(pages: 512)
        let sim = SimulatedDevice(configuration: smallConfig(), guestMemory: mem)
        let dev = MigrationDevice(name: "sim", region: sim)
        try dev.setState([.saving, .running])
        let dirty: [UInt64] = [10, 11, 200, 300, 301, 302, 511]
        sim.simulateDMA(toPages: dirty)
        let fromRegion = try RegionDirtyPageSource(device: dev).query(startPFN: 8, pageSize: 4096, totalPFNs: 504)
        let iommu = IOMMUDirtyPageSource(containerFD: 3, iovaBase: 0, kernel: .ioctlOnly { _, _, arg in
            guard arg.load(fromByteOffset: 4, as: UInt32.self) == IOMMUDirtyBitmap.flagGetBitmap else { return 0 }
            let r = try! IOMMUDirtyBitmap.parseGetBitmapRequest(Array(UnsafeRawBufferPointer(start: arg, count: 48)))
            let bitmap = UnsafeMutableRawPointer(bitPattern: UInt(r.bitmapAddress))!
            for pfn in dirty where pfn >= 8 {
                let i = Int(pfn - 8)
                bitmap.storeBytes(of: bitmap.load(fromByteOffset: i / 8, as: UInt8.self) | UInt8(1 << (i % 8)), toByteOffset: i / 8, as: UInt8.self)
            }
            return 0
        })
        let fromIOMMU = try iommu.query(startPFN: 8, pageSize: 4096, totalPFNs: 504)
        for segments in [fromRegion, fromIOMMU] {
            #expect(segments.first?.startPFN == 8)
            #expect(segments.map(\.pfnCount).reduce(0, +) == 504)
        }
        // The region form may answer ALL for a rest; every truly dirty page is in both.
        let r = Set(fromRegion.flatMap { $0.dirtyPFNs() }), i = Set(fromIOMMU.flatMap { $0.dirtyPFNs() })
        #expect(i == Set(dirty.filter { $0 >= 8 }))
        #expect(i.isSubset(of: r))
    }
}
