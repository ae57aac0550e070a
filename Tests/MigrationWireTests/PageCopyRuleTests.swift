import Testing
@testable import MigrationWire

/// Version 6's copy segments (PROTOCOL.md §17), each decoder rule with the exact error
/// it reports. Memory is `testMemory`: 4 KiB pages at PFN 0..<1024, 2 MiB pages at
/// 0x100000..<0x100010.
@Suite struct PageCopyRuleTests {
    static let copies: [Encoding] = [.raw, .deflate, .pageCopies]

    /// A version-6 source stream whose HELLO lists `encodings`; `streams` 1 (no routing)
    /// or 2 (stream 0 owns PFNs 0..<512, stream 1 512..<1024, as `testRouting`).
    static func source(encodings: [Encoding] = copies, streams: UInt16 = 1) -> StreamBuilder {
        var hello = testHello(encodings: encodings, version: .v6)
        hello.streams = StreamOffer(count: streams, blockPages: 512)
        var s = StreamBuilder()
        s.add(.hello(hello))
        return s
    }

    static func pages(_ segments: PageSegment..., pageSize: UInt32 = 4096) -> FrameBody {
        .pages(Pages(pageSize: pageSize, segments: segments))
    }

    /// The stream plus one PAGES frame of `segments`, decoded at version 6.
    static func decode(_ segments: PageSegment..., pageSize: UInt32 = 4096, encodings: [Encoding] = copies,
                       streams: UInt16 = 1) throws -> [Frame] {
        var s = source(encodings: encodings, streams: streams)
        s.add(.pages(Pages(pageSize: pageSize, segments: segments)))
        return try ZstdLaneTests.decodeAll(s.bytes, version: .v6)
    }

    // MARK: - accepted

    @Test func aListedCopyIsAcceptedAndCarriesItsSourcePFN() throws {
        let copy = PageSegment.copy(startPFN: 10, pageCount: 4, from: 100)
        #expect(copy.payload.elementsEqual([100, 0, 0, 0, 0, 0, 0, 0]), "u64 little-endian")
        #expect(PageSegment.copy(startPFN: 0, pageCount: 1, from: 0x0102_0304_0506_0708).copySourcePFN == 0x0102_0304_0506_0708)
        let segments = [PageSegment(startPFN: 100, pageCount: 1, encoding: .raw, payload: [UInt8](repeating: 7, count: 4096)),
                        copy, PageSegment.copy(startPFN: 20, pageCount: 1, from: 1023)]
        var s = Self.source()
        s.add(.pages(Pages(pageSize: 4096, segments: segments)))
        let frames = try ZstdLaneTests.decodeAll(s.bytes, version: .v6)
        #expect(frames.count == 2 && frames.last?.body == .pages(Pages(pageSize: 4096, segments: segments)))
        guard case .pages(let p) = frames.last?.body else { Issue.record("not PAGES: \(String(describing: frames.last))"); return }
        #expect(p.segments.map(\.copySourcePFN) == [nil, 100, 1023], "only a copy has a source")
        // 20-byte header and the 8-byte PFN: 28 bytes on the wire.
        #expect(payloadBytes(Self.pages(copy)).count == 8 + 28)
    }

    /// A range adjacent to the pages it writes (either side) does not overlap; 2 MiB
    /// pages copy within their own range; the last page of memory may be a source.
    @Test func adjacentRangesAndLargePagesAreAccepted() throws {
        #expect(try Self.decode(PageSegment.copy(startPFN: 10, pageCount: 4, from: 14), PageSegment.copy(startPFN: 10, pageCount: 4, from: 6)).count == 2)
        #expect(try Self.decode(PageSegment.copy(startPFN: 0, pageCount: 1, from: 1023)).count == 2)
        #expect(try Self.decode(PageSegment.copy(startPFN: 0x10_0000, pageCount: 8, from: 0x10_0008), pageSize: 2 << 20).count == 2)
    }

    // MARK: - where the source pages lie

    @Test func aSourceOutsideMemoryIsRefused() {
        #expect(throws: WireError.pfnOutsideMemory(frame: .pages, startPFN: 5000, count: 1)) {
            try Self.decode(PageSegment.copy(startPFN: 0, pageCount: 1, from: 5000))
        }
        // Starts inside, runs past PFN 1023.
        #expect(throws: WireError.pfnOutsideMemory(frame: .pages, startPFN: 1022, count: 4)) {
            try Self.decode(PageSegment.copy(startPFN: 0, pageCount: 4, from: 1022))
        }
    }

    @Test func aSourceInARangeOfAnotherPageSizeIsRefused() {
        #expect(throws: WireError.pageSizeMismatch(frame: .pages, pfn: 0x10_0000, declared: 4096, announced: 2 << 20)) {
            try Self.decode(PageSegment.copy(startPFN: 0, pageCount: 1, from: 0x10_0000))
        }
        #expect(throws: WireError.pageSizeMismatch(frame: .pages, pfn: 0, declared: 2 << 20, announced: 4096)) {
            try Self.decode(PageSegment.copy(startPFN: 0x10_0000, pageCount: 1, from: 0), pageSize: 2 << 20)
        }
    }

    @Test(arguments: [(UInt64(12), "partial"), (13, "by one page"), (8, "partial, below"), (10, "exact")])
    func overlappingRangesAreRefused(_ source: UInt64, _ what: String) {
        #expect(throws: WireError.copyOverlaps(startPFN: 10, sourcePFN: source, count: 4), "\(what)") {
            try Self.decode(PageSegment.copy(startPFN: 10, pageCount: 4, from: source))
        }
    }

    @Test func aSourceRangeThatOverflowsIsRefused() {
        for source: UInt64 in [.max, .max - 2] {
            #expect(throws: WireError.pfnOutsideMemory(frame: .pages, startPFN: source, count: 4)) {
                try Self.decode(PageSegment.copy(startPFN: 10, pageCount: 4, from: source))
            }
        }
    }

    // MARK: - the segment's form

    @Test(arguments: [7, 9, 0])
    func aPayloadOtherThan8BytesIsRefused(_ length: Int) {
        let segment = PageSegment(startPFN: 10, pageCount: 1, encoding: .copy, payload: [UInt8](repeating: 0, count: length))
        #expect(throws: WireError.payloadSizeMismatch(frame: .pages, field: "copy segment payload", expected: 8, actual: length)) {
            try Self.decode(segment)
        }
    }

    /// Bytes 13–15 of a copy segment are reserved (byte 13 is a lane only for encoding 4).
    @Test func reservedBytesMustBeZero() {
        #expect(throws: WireError.invalidValue(frame: .pages, field: "segment reserved", value: 1)) {
            try Self.decode(PageSegment(startPFN: 10, pageCount: 1, encoding: .copy, payload: PageSegment.copy(startPFN: 0, pageCount: 1, from: 20).payload, lane: 1))
        }
        var s = Self.source()
        var payload = payloadBytes(Self.pages(PageSegment.copy(startPFN: 10, pageCount: 1, from: 20)))
        payload[8 + 15] = 1  // after page size and count: the segment's byte 15
        s.bytes += rawFrame(type: FrameType.pages.rawValue, sequence: 1, payload: payload)
        #expect(throws: WireError.invalidValue(frame: .pages, field: "segment reserved", value: 1)) { try ZstdLaneTests.decodeAll(s.bytes, version: .v6) }
    }

    // MARK: - what the HELLOs allow

    @Test func aCopyNotListedByTheSourcesHelloIsRefused() {
        #expect(throws: WireError.encodingNotAnnounced(frame: .pages, encoding: "pageCopies")) {
            try Self.decode(PageSegment.copy(startPFN: 10, pageCount: 1, from: 20), encodings: [.raw, .deflate, .zstd, .xxh3Digest])
        }
    }

    /// Encoding 5 is version 6's: a HELLO of version 5 (or older) that lists it is
    /// refused as an unknown encoding, as a version-5 peer refuses it; both roles.
    @Test func anOlderHelloListingEncoding5IsRefusedAsUnknown() throws {
        for role in [Role.source, .destination] {
            for version in [ProtocolVersion.v1, .v5] {
                var s = StreamBuilder()
                s.add(.hello(testHello(role: role, encodings: [.raw, .pageCopies], version: version)))
                #expect(throws: WireError.unknownEncoding(frame: .hello, value: 5), "\(role) \(version)") {
                    try ZstdLaneTests.decodeAll(s.bytes, peer: role, version: version)
                }
            }
            var ok = StreamBuilder()
            let hello = testHello(role: role, encodings: [.raw, .pageCopies], version: .v6)
            ok.add(.hello(hello))
            #expect(try ZstdLaneTests.decodeAll(ok.bytes, peer: role, version: .v6).first?.body == .hello(hello))
        }
        #expect(Encoding.pageCopies.rawValue == 5 && Encoding.pageCopies.introduced == .v6 && !Encoding.pageCopies.carriesDeviceData)
        #expect(ProtocolVersion.v6.alpnIdentifier == "vfio-migrate/6")
    }

    /// DEVICE_DATA never uses encoding 5, even in a version-6 session that listed it.
    @Test func deviceDataWithEncoding5IsRefused() throws {
        let data = DeviceData(phase: .precopy, encoding: .pageCopies, originalLength: 4, payload: [1, 2, 3, 4])
        var s = Self.source()
        s.add(.deviceData(data), device: 0)
        #expect(throws: DeviceData.refused(.pageCopies)) { try ZstdLaneTests.decodeAll(s.bytes, version: .v6) }
        #expect(DeviceData.refused(.pageCopies) == .invalidValue(frame: .deviceData, field: "encoding (5, page copies, is for PAGES segments only)", value: 5))
        #expect(throws: DeviceData.refused(.pageCopies)) { try PayloadDecompressor().decode(data) }
    }

    // MARK: - several streams (§14)

    /// Stream 0 writes its own PFN 10 from PFN 600, which stream 1 owns.
    @Test func streamZeroRefusesASourceOfAnotherStream() throws {
        #expect(try Self.decode(PageSegment.copy(startPFN: 10, pageCount: 4, from: 500), streams: 2).count == 2)
        #expect(throws: WireError.pageOnForeignStream(pfn: 600, stream: 0, owner: 1)) {
            try Self.decode(PageSegment.copy(startPFN: 10, pageCount: 4, from: 600), streams: 2)
        }
        // 510..<514 runs from stream 0's block into stream 1's.
        #expect(throws: WireError.pageOnForeignStream(pfn: 512, stream: 0, owner: 1)) {
            try Self.decode(PageSegment.copy(startPFN: 10, pageCount: 4, from: 510), streams: 2)
        }
    }

    /// Extra stream 1 writes its own PFN 520 from PFN 100, which stream 0 owns.
    @Test func anExtraStreamRefusesASourceOfAnotherStream() throws {
        func joined(_ segment: PageSegment) throws -> [WireMessage] {
            var decoder = FrameDecoder(joinedStream: 1, routing: testRouting, memory: testMemory, encodings: Self.copies, version: .v6)
            var extra = StreamBuilder()
            extra.add(Self.pages(segment))
            decoder.feed(extra.bytes)
            var messages: [WireMessage] = []
            while let m = try decoder.nextMessage() { messages.append(m) }
            return messages
        }
        #expect(try joined(PageSegment.copy(startPFN: 520, pageCount: 2, from: 1000)).count == 1)
        #expect(throws: WireError.pageOnForeignStream(pfn: 100, stream: 1, owner: 0)) {
            try joined(PageSegment.copy(startPFN: 520, pageCount: 2, from: 100))
        }
    }
}
