import CVFIO
import Glibc
import SystemPackage
import Testing
@testable import VFIODevice
@testable import VFIOSimulator

/// Builds a region-info buffer the way the kernel lays it out.
struct RegionInfoBuilder {
    var bytes = [UInt8](repeating: 0, count: 32)

    init(index: UInt32, flags: UInt32, size: UInt64, offset: UInt64) {
        set(4, UInt64(flags), 4); set(8, UInt64(index), 4); set(16, size, 8); set(24, offset, 8)
    }

    mutating func set(_ at: Int, _ v: UInt64, _ width: Int) {
        if bytes.count < at + width { bytes += [UInt8](repeating: 0, count: at + width - bytes.count) }
        for i in 0..<width { bytes[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }

    /// Appends a capability at the current end, 8-aligned; returns its offset.
    @discardableResult
    mutating func cap(id: UInt16, body: [UInt32]) -> Int {
        while bytes.count % 8 != 0 { bytes.append(0) }
        let at = bytes.count
        set(at, UInt64(id), 2); set(at + 2, 1, 2); set(at + 4, 0, 4)
        for (i, v) in body.enumerated() { set(at + 8 + 4 * i, UInt64(v), 4) }
        return at
    }

    /// Links caps in the given order and finalises argsz / cap_offset.
    mutating func chain(_ offsets: [Int]) {
        set(12, UInt64(offsets.first ?? 0), 4)
        for (a, b) in zip(offsets, offsets.dropFirst()) { set(a + 4, UInt64(b), 4) }
        set(0, UInt64(bytes.count), 4)
    }
}

@Suite struct CapabilityChainTests {
    func migrationRegion() -> [UInt8] {
        var b = RegionInfoBuilder(index: 9, flags: VFIORegionInfo.flagRead | VFIORegionInfo.flagWrite | VFIORegionInfo.flagCaps,
                                  size: 0x10_0000, offset: 0x90_0000_0000)
        let sparse = b.cap(id: 1, body: [1, 0, 0x1000, 0, 0x1000, 0])   // sparse mmap first
        let type = b.cap(id: 2, body: [3, 1])
        b.chain([sparse, type])
        return b.bytes
    }

    @Test func layoutMatchesTheKernelHeader() {
        #expect(Int(CVFIO_SIZEOF_REGION_INFO) == VFIORegionInfo.size)
        #expect(CVFIO_SIZEOF_DEVICE_INFO == 20)
        #expect(CVFIO_REGION_INFO_CAP_TYPE == UInt32(VFIOCapabilityChain.capTypeID))
        #expect(CVFIO_REGION_INFO_FLAG_CAPS == VFIORegionInfo.flagCaps)
        #expect(CVFIO_DEVICE_GET_REGION_INFO == 0x3B6C && CVFIO_DEVICE_GET_INFO == 0x3B6B)
        #expect(CVFIO_IOMMU_DIRTY_PAGES == 0x3B75)
    }

    @Test func findsTheMigrationRegion() throws {
        let buffer = migrationRegion()
        let info = try VFIORegionInfo.parse(buffer)
        #expect(info.index == 9 && info.size == 0x10_0000 && info.offset == 0x90_0000_0000 && Int(info.argsz) == buffer.count)
        let caps = try VFIOCapabilityChain.parse(buffer, firstOffset: info.capOffset, infoSize: 32)
        #expect(caps.map(\.id) == [1, 2])
        let t = try #require(try VFIOCapabilityChain.regionType(in: buffer, firstOffset: info.capOffset))
        #expect(t.type == 3 && t.subtype == 1)
        #expect(try VFIORegionInfo.isMigrationRegion(buffer))
    }

    @Test func otherRegionsAreNotMigrationRegions() throws {
        var gfx = RegionInfoBuilder(index: 9, flags: VFIORegionInfo.flagCaps, size: 4096, offset: 0)
        gfx.chain([gfx.cap(id: 2, body: [1, 1])])                       // GFX / EDID
        #expect(try !VFIORegionInfo.isMigrationRegion(gfx.bytes))
        var noCaps = RegionInfoBuilder(index: 0, flags: VFIORegionInfo.flagRead, size: 4096, offset: 0)
        noCaps.chain([])
        #expect(try !VFIORegionInfo.isMigrationRegion(noCaps.bytes))
        var sparseOnly = RegionInfoBuilder(index: 0, flags: VFIORegionInfo.flagCaps, size: 4096, offset: 0)
        sparseOnly.chain([sparseOnly.cap(id: 1, body: [0, 0])])
        #expect(try !VFIORegionInfo.isMigrationRegion(sparseOnly.bytes))
        // Flag set but the chain did not fit (kernel zeroes cap_offset): not found, no error.
        var truncated = RegionInfoBuilder(index: 0, flags: VFIORegionInfo.flagCaps, size: 4096, offset: 0)
        truncated.set(0, 64, 4)
        #expect(try !VFIORegionInfo.isMigrationRegion(truncated.bytes))
    }

    @Test func malformedChainsTerminateWithATypedError() throws {
        func reason(_ buffer: [UInt8], first: UInt32) -> String? {
            guard case .malformedCapabilityChain(_, let why)? = thrownError({ try VFIOCapabilityChain.parse(buffer, firstOffset: first, infoSize: 32) }) else { return nil }
            return why
        }
        var b = RegionInfoBuilder(index: 0, flags: VFIORegionInfo.flagCaps, size: 0, offset: 0)
        let a = b.cap(id: 1, body: [0, 0])
        let c = b.cap(id: 5, body: [0, 0])
        b.chain([a, c])
        var loop = b.bytes
        loop[c + 4] = UInt8(a)                                          // c → a: a cycle
        #expect(reason(loop, first: UInt32(a))?.contains("loop") == true)
        var selfLoop = b.bytes
        selfLoop[a + 4] = UInt8(a)
        #expect(reason(selfLoop, first: UInt32(a))?.contains("loop") == true)
        var pastEnd = b.bytes
        pastEnd[c + 4] = 0; pastEnd[c + 5] = 0x10                        // next = 4096
        #expect(reason(pastEnd, first: UInt32(a))?.contains("past the end") == true)
        #expect(reason(b.bytes, first: 8)?.contains("inside") == true)   // inside the info header
        #expect(reason(b.bytes, first: 0xFFFF_FFF0)?.contains("past the end") == true)
        #expect(reason(b.bytes, first: UInt32(a + 2))?.contains("aligned") == true)
        var shortTail = b.bytes
        shortTail.removeLast(shortTail.count - (c + 4))                 // only half of c's header
        #expect(reason(shortTail, first: UInt32(a))?.contains("truncated") == true)
        // The type capability itself must be whole.
        var shortType = RegionInfoBuilder(index: 0, flags: VFIORegionInfo.flagCaps, size: 0, offset: 0)
        let t = shortType.cap(id: 2, body: [3, 1])
        shortType.chain([t])
        let cut = Array(shortType.bytes.prefix(t + 12))
        #expect(thrownError { try VFIOCapabilityChain.regionType(in: cut, firstOffset: UInt32(t)) }?.kind == "malformedCapabilityChain")
        // isMigrationRegion trusts only argsz bytes.
        var lying = migrationRegion()
        lying[0] = 40; lying[1] = 0; lying[2] = 0; lying[3] = 0
        #expect(thrownError { try VFIORegionInfo.isMigrationRegion(lying) }?.kind == "malformedCapabilityChain")
        #expect(thrownError { try VFIORegionInfo.parse([1, 2, 3]) }?.kind == "invalidArgument")
    }

    @Test func randomGarbageNeverHangs() {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<2000 {
            var bytes = [UInt8](repeating: 0, count: 32 + Int(rng.next(below: 96)))
            rng.fill(&bytes, range: 0..<bytes.count)
            // Mostly small offsets so chains actually form.
            for i in stride(from: 36, to: bytes.count - 3, by: 8) { bytes[i] = UInt8(rng.next(below: UInt64(bytes.count))); bytes[i + 1] = 0; bytes[i + 2] = 0; bytes[i + 3] = 0 }
            let first = UInt32(rng.next(below: UInt64(bytes.count)))
            _ = try? VFIOCapabilityChain.regionType(in: bytes, firstOffset: first)
        }
    }

    @Test func argszGrowthRequery() throws {
        let full = migrationRegion()
        var calls: [Int] = []
        // A fake kernel: fills what fits, reports the argsz it needs, like the real ioctl.
        let buffer = try VFIORegionInfo.query(index: 9) { request in
            calls.append(request.count)
            let n = min(request.count, full.count)
            request.replaceSubrange(0..<n, with: full[0..<n])
            if request.count < full.count { request[12] = 0; request[13] = 0 }  // cap_offset 0 when it does not fit
        }
        #expect(calls == [32, full.count])
        #expect(try VFIORegionInfo.isMigrationRegion(buffer))
        let e = thrownError {
            try VFIORegionInfo.query(index: 1) { request in
                VFIORegionInfo.put(&request, 0, UInt64(request.count + 8), 4)   // never satisfied
            }
        }
        #expect(e?.kind == "protocolViolation")
    }

    @Test func discoveryErrorsAreClear() {
        let missing = thrownError { try VFIODiscovery.open(group: "42", device: "0000:00:00.0", containerPath: "/nonexistent/vfio") }
        #expect(missing == .systemCall("open VFIO container", path: "/nonexistent/vfio", errno: .noSuchFileOrDirectory))
        let notVFIO = thrownError { try VFIODiscovery.open(group: "42", device: "x", containerPath: "/dev/null") }
        #expect(notVFIO?.kind == "invalidArgument")
        #expect(DeviceError.noSuchGroup(path: "/dev/vfio/42", errno: .noSuchFileOrDirectory).description.contains("/dev/vfio/42"))
        #expect(DeviceError.groupNotViable(group: "42").description.contains("not viable"))
        #expect(DeviceError.noMigrationRegion(device: "0000:01:00.0", regionsScanned: 9).description.contains("type 3 / subtype 1"))
    }
}
