/// HELLO payload (offsets relative to the payload):
///
///     0   [8]  magic "VFIO-MIG"
///     8   u16  protocol version
///     10  u8   role (1 source, 2 destination)
///     11  u8   E = number of encodings
///     12  [16] session id
///     28  [E]  encodings, one u8 each
///     ..  u16  D = number of devices, then D × { u16 name length, name (UTF-8),
///              u32 page size, u16 compatibility length, compatibility (UTF-8) }
///     ..  u32  R = number of memory ranges, then R × { u64 start PFN, u64 page count, u32 page size }
///     ..  version 3 and later: u16 streams, u16 lanes (version 4; reserved in 3), u32 block pages (§14.2)
///
/// The first 10 bytes (magic, version) keep this layout in every future version
/// so that any peer can tell which version it is talking to.
extension Hello {
    static let magic: [UInt8] = Array("VFIO-MIG".utf8)
    static let sessionIDSize = 16
    static let minDeviceEntrySize = 8
    static let memoryRangeEntrySize = 20

    func write(to w: inout ByteWriter) {
        precondition(sessionID.count == Hello.sessionIDSize, "HELLO session id must be 16 bytes")
        precondition(encodings.count <= Int(UInt8.max) && devices.count <= Int(UInt16.max))
        w.append(Hello.magic)
        w.u16(version)
        w.u8(role.rawValue)
        w.u8(UInt8(encodings.count))
        w.append(sessionID)
        for e in encodings { w.u8(e.rawValue) }
        w.u16(UInt16(devices.count))
        for d in devices {
            w.string16(d.name)
            w.u32(d.pageSize)
            w.string16(d.compatibility)
        }
        w.u32(UInt32(memory.count))
        for m in memory {
            w.u64(m.startPFN)
            w.u64(m.pageCount)
            w.u32(m.pageSize)
        }
        // Written whenever set, so a test can build the hostile version-2 HELLO that carries it.
        if let streams {
            w.u16(streams.count); w.u16(streams.lanes); w.u32(streams.blockPages)
        }
    }

    /// `version` is the session's (version 1, or what ALPN negotiated): the layout is
    /// the same in 1 and 2, and a HELLO of any other version is refused (§10).
    static func parse(_ r: inout ByteReader, limits: WireLimits, version expected: ProtocolVersion = .v1) throws(WireError) -> Hello {
        let magic = try r.bytes(8, "magic")
        guard magic == Hello.magic else { throw .badHelloMagic(found: magic) }
        let version = try r.u16("version")
        guard version == expected.rawValue else { throw .unsupportedVersion(version, supported: expected.rawValue) }
        let rawRole = try r.u8("role")
        guard let role = Role(rawValue: rawRole) else { throw .invalidValue(frame: .hello, field: "role", value: UInt64(rawRole)) }
        let encodingCount = Int(try r.u8("encoding count"))
        let sessionID = try r.bytes(sessionIDSize, "session id")
        var encodings: [Encoding] = []
        for _ in 0..<encodingCount {
            let raw = try r.u8("encodings")
            // zstd is a version-2 encoding: a version-1 HELLO that lists it is refused
            // as a version-1 peer built before it would refuse it (§10).
            guard let e = Encoding(rawValue: raw), e.introduced <= expected else { throw .unknownEncoding(frame: .hello, value: raw) }
            encodings.append(e)
        }
        let deviceCount = Int(try r.u16("device count"))
        guard deviceCount <= limits.maxDevices else { throw .tooManyDevices(declared: deviceCount, limit: limits.maxDevices) }
        guard deviceCount * minDeviceEntrySize <= r.remaining else {
            throw .countExceedsPayload(frame: .hello, field: "device count", count: UInt64(deviceCount), remainingBytes: r.remaining)
        }
        var devices: [DeviceDescriptor] = []
        devices.reserveCapacity(deviceCount)
        for _ in 0..<deviceCount {
            let name = try r.string16("device name")
            let pageSize = try r.u32("device page size")
            guard isValidPageSize(UInt64(pageSize)) else { throw .invalidPageSize(frame: .hello, pageSize: UInt64(pageSize)) }
            let compatibility = try r.string16("device compatibility")
            devices.append(DeviceDescriptor(name: name, pageSize: pageSize, compatibility: compatibility))
        }
        let rangeCount = UInt64(try r.u32("memory range count"))
        guard rangeCount * UInt64(memoryRangeEntrySize) <= UInt64(r.remaining) else {
            throw .countExceedsPayload(frame: .hello, field: "memory range count", count: rangeCount, remainingBytes: r.remaining)
        }
        var memory: [MemoryRange] = []
        memory.reserveCapacity(Int(rangeCount))
        for _ in 0..<rangeCount {
            let start = try r.u64("memory start PFN")
            let count = try r.u64("memory page count")
            let pageSize = try r.u32("memory page size")
            guard count > 0 else { throw .invalidValue(frame: .hello, field: "memory page count", value: 0) }
            guard start.addingReportingOverflow(count).overflow == false else {
                throw .invalidValue(frame: .hello, field: "memory start PFN", value: start)
            }
            guard isValidPageSize(UInt64(pageSize)) else { throw .invalidPageSize(frame: .hello, pageSize: UInt64(pageSize)) }
            memory.append(MemoryRange(startPFN: start, pageCount: count, pageSize: pageSize))
        }
        // Before version 3 the tail is trailing bytes, as a peer built from the older text sees it.
        let streams = expected >= .v3 ? try parseStreams(&r, role: role, version: expected) : nil
        try r.expectEnd()
        return Hello(version: version, sessionID: sessionID, role: role, encodings: encodings, devices: devices, memory: memory, streams: streams)
    }

    /// §14.2: at least one stream; a destination's block is 0, a source's at least 1.
    /// Version 4 (§15): the reserved u16 is the session's lanes L, at most `StreamOffer.maxLanes`.
    static func parseStreams(_ r: inout ByteReader, role: Role, version: ProtocolVersion) throws(WireError) -> StreamOffer {
        let count = try r.u16("stream count")
        var lanes: UInt16 = 0
        if version >= .v4 { lanes = try r.u16("stream lanes") } else { try r.reserved(2, "reserved") }
        let block = try r.u32("stream block pages")
        guard count >= 1 else { throw .invalidValue(frame: .hello, field: "stream count", value: 0) }
        guard (role == .destination) == (block == 0) else { throw .invalidValue(frame: .hello, field: "stream block pages", value: UInt64(block)) }
        guard lanes <= StreamOffer.maxLanes else { throw .invalidValue(frame: .hello, field: "stream lanes", value: UInt64(lanes)) }
        return StreamOffer(count: count, blockPages: block, lanes: lanes)
    }
}

/// Page sizes are non-zero powers of two (4 KiB, 2 MiB, 1 GiB, ...).
func isValidPageSize(_ ps: UInt64) -> Bool { ps != 0 && ps & (ps - 1) == 0 }
