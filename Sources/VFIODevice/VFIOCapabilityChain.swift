/// One entry of a VFIO info capability chain (`struct vfio_info_cap_header` and body).
public struct VFIOCapability: Sendable, Equatable {
    public var id: UInt16
    public var version: UInt16
    /// Offset of this capability from the start of the info buffer.
    public var offset: UInt32
    /// The `next` field: 0 ends the chain.
    public var next: UInt32
}

/// Pure parsers for the structures `VFIO_DEVICE_GET_REGION_INFO` fills in. Every
/// offset comes from the kernel (or from a fuzzer in tests), so every one is checked:
/// the walk terminates on any input and reports a malformed chain as a typed error.
public enum VFIOCapabilityChain {
    public static let capHeaderSize = 8
    /// `VFIO_REGION_INFO_CAP_TYPE`: header + type u32 + subtype u32.
    public static let capTypeID: UInt16 = 2
    public static let capTypeSize = 16

    /// Walks the chain starting at `firstOffset` (0: no capabilities). `infoSize` is
    /// the fixed info struct the chain follows; no capability may start inside it.
    public static func parse(_ buffer: [UInt8], firstOffset: UInt32, infoSize: Int) throws(DeviceError) -> [VFIOCapability] {
        var caps: [VFIOCapability] = []
        var visited = Set<UInt32>()
        var offset = firstOffset
        while offset != 0 {
            guard !visited.contains(offset) else {
                throw DeviceError.malformedCapabilityChain(offset: offset, reason: "loop: offset \(offset) visited twice")
            }
            visited.insert(offset)
            guard offset >= UInt32(infoSize) else {
                throw DeviceError.malformedCapabilityChain(offset: offset, reason: "capability inside the \(infoSize)-byte info header")
            }
            guard offset % 4 == 0 else {
                throw DeviceError.malformedCapabilityChain(offset: offset, reason: "capability not 4-byte aligned")
            }
            guard UInt64(offset) < UInt64(buffer.count) else {
                throw DeviceError.malformedCapabilityChain(offset: offset, reason: "offset past the end of the \(buffer.count)-byte buffer")
            }
            guard UInt64(offset) + UInt64(capHeaderSize) <= UInt64(buffer.count) else {
                throw DeviceError.malformedCapabilityChain(offset: offset, reason: "truncated capability header (\(buffer.count - Int(offset)) of 8 bytes)")
            }
            let o = Int(offset)
            let cap = VFIOCapability(id: UInt16(le(buffer, o, 2)), version: UInt16(le(buffer, o + 2, 2)),
                                     offset: offset, next: UInt32(le(buffer, o + 4, 4)))
            caps.append(cap)
            offset = cap.next
        }
        return caps
    }

    /// The (type, subtype) of the region's `VFIO_REGION_INFO_CAP_TYPE`, if present.
    public static func regionType(in buffer: [UInt8], firstOffset: UInt32, infoSize: Int = VFIORegionInfo.size) throws(DeviceError) -> (type: UInt32, subtype: UInt32)? {
        for cap in try parse(buffer, firstOffset: firstOffset, infoSize: infoSize) where cap.id == capTypeID {
            let o = Int(cap.offset)
            guard o + capTypeSize <= buffer.count else {
                throw DeviceError.malformedCapabilityChain(offset: cap.offset, reason: "truncated type capability (\(buffer.count - o) of \(capTypeSize) bytes)")
            }
            return (UInt32(le(buffer, o + 8, 4)), UInt32(le(buffer, o + 12, 4)))
        }
        return nil
    }

    static func le(_ b: [UInt8], _ at: Int, _ width: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<width { v |= UInt64(b[at + i]) << (8 * UInt64(i)) }
        return v
    }
}

/// `struct vfio_region_info` (32 bytes) plus whatever capability bytes follow it.
public struct VFIORegionInfo: Sendable, Equatable {
    public static let size = 32
    public static let flagRead: UInt32 = 1 << 0
    public static let flagWrite: UInt32 = 1 << 1
    public static let flagMmap: UInt32 = 1 << 2
    public static let flagCaps: UInt32 = 1 << 3

    public var argsz: UInt32
    public var flags: UInt32
    public var index: UInt32
    public var capOffset: UInt32
    public var size: UInt64
    public var offset: UInt64

    /// A zeroed request for region `index` with room for `argsz` bytes.
    public static func request(index: UInt32, argsz: Int = size) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: max(argsz, size))
        put(&b, 0, UInt64(b.count), 4)
        put(&b, 8, UInt64(index), 4)
        return b
    }

    public static func parse(_ b: [UInt8]) throws(DeviceError) -> VFIORegionInfo {
        guard b.count >= size else {
            throw DeviceError.invalidArgument(operation: "parse vfio_region_info", detail: "\(b.count) bytes, at least \(size) needed")
        }
        let le = VFIOCapabilityChain.le
        return VFIORegionInfo(argsz: UInt32(le(b, 0, 4)), flags: UInt32(le(b, 4, 4)), index: UInt32(le(b, 8, 4)),
                              capOffset: UInt32(le(b, 12, 4)), size: le(b, 16, 8), offset: le(b, 24, 8))
    }

    /// Whether the buffer describes the v8 migration region (cap type 3 / subtype 1).
    public static func isMigrationRegion(_ b: [UInt8]) throws(DeviceError) -> Bool {
        let info = try parse(b)
        guard info.flags & flagCaps != 0, info.capOffset != 0 else { return false }
        // Only the bytes the kernel says it filled are trusted.
        let filled = Array(b.prefix(Int(min(UInt64(info.argsz), UInt64(b.count)))))
        guard let t = try VFIOCapabilityChain.regionType(in: filled, firstOffset: info.capOffset) else { return false }
        return t.type == MigrationInfo.regionType && t.subtype == MigrationInfo.regionSubtype
    }

    static func put(_ b: inout [UInt8], _ at: Int, _ v: UInt64, _ width: Int) {
        for i in 0..<width { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }

    /// Runs `query` (the ioctl) on a request buffer, growing it once to the `argsz`
    /// the kernel asks for when the capability chain does not fit.
    public static func query(index: UInt32, _ query: (inout [UInt8]) throws(DeviceError) -> Void) throws(DeviceError) -> [UInt8] {
        var buffer = request(index: index)
        for _ in 0..<3 {
            try query(&buffer)
            let info = try parse(buffer)
            if Int(info.argsz) <= buffer.count { return buffer }
            guard info.argsz <= 1 << 20 else {
                throw DeviceError.protocolViolation(step: "VFIO_DEVICE_GET_REGION_INFO", detail: "region \(index) asks for an argsz of \(info.argsz) bytes")
            }
            buffer = request(index: index, argsz: Int(info.argsz))
        }
        throw DeviceError.protocolViolation(step: "VFIO_DEVICE_GET_REGION_INFO", detail: "region \(index) kept growing its argsz")
    }
}
