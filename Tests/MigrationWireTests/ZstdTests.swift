import Testing
@testable import MigrationWire

/// zstd as a payload encoding (PROTOCOL.md §9): round trips at every kind of level,
/// the frame rules a decoder enforces before it allocates, and the negotiation rules.
@Suite struct ZstdTests {
    @Test(arguments: [-50, -5, -1, 1, 3, 19])
    func roundTripsAtEveryKindOfLevel(_ level: Int) throws {
        let compressor = try ZstdCompressor(level: level)
        let decompressor = try ZstdDecompressor()
        var rng = SeededRNG(seed: UInt64(level + 100))
        for original in [textBytes(1), textBytes(4096), textBytes(300_000), rng.bytes(5000), [UInt8](repeating: 0xAB, count: 1 << 20)] {
            let packed = try compressor.compress(original[...])
            #expect(try decompressor.decompress(packed, expectedLength: original.count, limit: 16 << 20, frame: nil) == original)
        }
    }

    @Test func levelsOutsideTheRangeAreRefused() {
        for level in [0, 20, 22, -51] {
            #expect(throws: WireError.invalidZstdLevel(level)) { try ZstdCompressor(level: level) }
        }
    }

    @Test func policyParsesZstdLevels() throws {
        for level in [-50, -5, -1, 1, 3, 19] {
            #expect(try CompressionPolicy(parsing: "zstd:\(level)") == .zstd(level: level))
            #expect(try CompressionPolicy(parsing: CompressionPolicy.zstd(level: level).description) == .zstd(level: level))
        }
        for bad in ["zstd:0", "zstd:20", "zstd:-51", "zstd:", "zstd:+3", "zstd:03", "zstd:1.5", "zstd"] {
            #expect(throws: WireError.invalidCompressionPolicy(bad)) { try CompressionPolicy(parsing: bad) }
        }
    }

    /// A bomb: the header says more than the payload declares. Refused before any output is made.
    @Test func contentSizeMustEqualTheDeclaredLength() throws {
        let original = [UInt8](repeating: 0, count: 1 << 20)
        let packed = try ZstdCompressor(level: 1).compress(original[...])
        let d = try ZstdDecompressor()
        #expect(throws: WireError.zstdContentSize(frame: .pages, declared: 4096, inFrame: 1 << 20)) {
            try d.decompress(packed, expectedLength: 4096, limit: 16 << 20, frame: .pages)
        }
        #expect(throws: WireError.zstdContentSize(frame: .pages, declared: (1 << 20) + 1, inFrame: 1 << 20)) {
            try d.decompress(packed, expectedLength: (1 << 20) + 1, limit: 16 << 20, frame: .pages)
        }
        #expect(throws: WireError.inflatedTooLarge(frame: .pages, declared: 1 << 20, limit: 4096)) {
            try d.decompress(packed, expectedLength: 1 << 20, limit: 4096, frame: .pages)
        }
    }

    @Test func aFrameWithoutContentSizeIsRefused() throws {
        let original = textBytes(8192)
        let packed = try ZstdCompressor(level: 1, contentSize: false).compress(original[...])
        #expect(throws: WireError.zstdContentSize(frame: .deviceData, declared: 8192, inFrame: nil)) {
            try ZstdDecompressor().decompress(packed, expectedLength: 8192, limit: 16 << 20, frame: .deviceData)
        }
    }

    @Test func exactlyOneFrameAndNothingElse() throws {
        let original = textBytes(4096)
        let packed = try ZstdCompressor(level: 3).compress(original[...])
        let d = try ZstdDecompressor()
        func refused(_ bytes: [UInt8], _ detail: String) {
            #expect(throws: WireError.corruptZstdFrame(frame: .pages, detail: detail)) {
                try d.decompress(bytes, expectedLength: 4096, limit: 16 << 20, frame: .pages)
            }
        }
        refused(packed + [0], "1 byte(s) after the end of the frame")
        refused(packed + packed, "\(packed.count) byte(s) after the end of the frame")
        refused([], "no zstd frame magic (skippable frames are not allowed)")
        // A skippable frame (magic 0x184D2A50) carrying the real one is still not a zstd frame.
        refused([0x50, 0x2A, 0x4D, 0x18] + [UInt8(packed.count), 0, 0, 0] + packed, "no zstd frame magic (skippable frames are not allowed)")
        refused(Array(packed.prefix(packed.count - 1)), "invalid or truncated frame")
        refused(Array(packed.prefix(5)), "invalid or truncated frame")
    }

    /// The frame header's dictionary-ID flag (bits 0–1 of the descriptor) with an ID byte inserted.
    @Test func aFrameNeedingADictionaryIsRefused() throws {
        let original = textBytes(4096)
        var packed = try ZstdCompressor(level: 1).compress(original[...])
        #expect(packed[4] & 0x20 != 0, "single segment: no window descriptor before the dictionary ID")
        packed[4] |= 0x01
        packed.insert(7, at: 5)
        #expect(throws: WireError.corruptZstdFrame(frame: nil, detail: "frame needs dictionary 7 (none are used)")) {
            try ZstdDecompressor().decompress(packed, expectedLength: 4096, limit: 16 << 20, frame: nil)
        }
    }

    /// §9: a window above 2^27 bytes is refused even though one-shot decoding would
    /// not need it (an independent streaming receiver keeps libzstd's default limit).
    /// A hand-made frame: FHD 0x80 (4-byte content size, not single-segment), the
    /// window descriptor, the content size 4096, one last RLE block of 4096 × 0xab.
    @Test func windowsAboveTwoToTheTwentySevenAreRefused() throws {
        func frame(windowDescriptor: UInt8) -> [UInt8] {
            ZstdDecompressor.magic + [0x80, windowDescriptor, 0x00, 0x10, 0x00, 0x00, 0x03, 0x80, 0x00, 0xab]
        }
        let d = try ZstdDecompressor()
        // 2^27 exactly (exponent 17) is allowed, and the frame is what it says.
        #expect(try d.decompress(frame(windowDescriptor: 17 << 3), expectedLength: 4096, limit: 16 << 20, frame: .pages)
                == [UInt8](repeating: 0xab, count: 4096))
        #expect(ZstdDecompressor.windowSize(frame(windowDescriptor: 17 << 3 | 1)[...]) == (1 << 27) + (1 << 24))
        #expect(throws: WireError.corruptZstdFrame(frame: .pages, detail: "window of \((1 << 27) + (1 << 24)) bytes above 2^27 (PROTOCOL.md §9)")) {
            try d.decompress(frame(windowDescriptor: 17 << 3 | 1), expectedLength: 4096, limit: 16 << 20, frame: .pages)
        }
        #expect(throws: WireError.corruptZstdFrame(frame: .deviceData, detail: "window of \(1 << 31) bytes above 2^27 (PROTOCOL.md §9)")) {
            try d.decompress(frame(windowDescriptor: 21 << 3), expectedLength: 4096, limit: 16 << 20, frame: .deviceData)
        }
        // Our own frames are single-segment: their window is their content.
        let packed = try ZstdCompressor(level: 3).compress(textBytes(4096)[...])
        #expect(ZstdDecompressor.windowSize(packed[...]) == nil)
    }

    // MARK: - payloads and negotiation

    @Test func zstdPolicyFallsBackToDeflateWhenTheDestinationLacksIt() throws {
        let bytes = textBytes(64 * 1024)
        let without = try PayloadCompressor(policy: .zstd(level: 3))
        #expect(without.defaultCodec == .deflate(level: 3))
        #expect(try without.encode(bytes).0 == .deflate)
        let with = try PayloadCompressor(policy: .zstd(level: 3), zstdAccepted: true)
        let (encoding, payload) = try with.encode(bytes)
        #expect(encoding == .zstd)
        #expect(try PayloadDecompressor().decode(DeviceData(phase: .precopy, encoding: .zstd, originalLength: UInt32(bytes.count), payload: payload)) == bytes)
        // Negative levels fall back to the cheapest deflate.
        #expect(PayloadCompressor.resolve(.zstd(level: -5), zstdAccepted: false) == .deflate(level: 1))
    }

    @Test func pagesRoundTripAsZstdSegments() throws {
        let pageSize = 4096
        var rng = SeededRNG(seed: 5)
        let bytes = mixedPages(pages: 48, pageSize: pageSize, rng: &rng)
        let compressor = try PayloadCompressor(policy: .zstd(level: 1), zstdAccepted: true)
        let segments = try compressor.encodePages(startPFN: 0, pageSize: pageSize, bytes: bytes)
        #expect(segments.contains { $0.encoding == .zstd })
        #expect(!segments.contains { $0.encoding == .deflate })
        let d = try PayloadDecompressor()
        let decoded = try segments.flatMap { try d.decode($0, pageSize: pageSize) }
        #expect(decoded == bytes)
    }

    /// `auto` with a caller's choice: raw sends raw (no codec run), a codec level uses it.
    @Test func autoFollowsTheCallersChoicePerBatch() throws {
        let bytes = textBytes(64 * 1024)
        let auto = try PayloadCompressor(policy: .auto, zstdAccepted: true)
        #expect(try auto.encode(bytes, choice: .raw) == (.raw, bytes))
        #expect(auto.counters.rawByChoice == 1 && auto.counters.fullDeflates == 0)
        #expect(try auto.encode(bytes, choice: .codec(.zstd(level: -1))).0 == .zstd)
        #expect(try auto.encode(bytes, choice: .codec(.deflate(level: 1))).0 == .deflate)
        #expect(auto.counters.codecBytesIn == 2 * bytes.count && auto.counters.codecBytesOut < bytes.count)
        // Without zstd negotiated a zstd choice deflates: nothing unannounced goes out.
        let noZstd = try PayloadCompressor(policy: .auto)
        #expect(try noZstd.encode(bytes, choice: .codec(.zstd(level: 1))).0 == .deflate)
    }

    @Test func aPolicyListsOnlyWhatItMayUse() {
        #expect(CompressionPolicy.none.encodings == [.raw])
        #expect(CompressionPolicy.zlib(level: 1).encodings == [.raw, .deflate])
        #expect(CompressionPolicy.zstd(level: 1).encodings == [.raw, .deflate, .zstd])
        #expect(CompressionPolicy.auto.encodings == [.raw, .deflate, .zstd])
    }

    /// A zstd payload in a session whose source HELLO did not list zstd is a protocol
    /// error at the decoder, before anything is decompressed or applied.
    @Test func zstdWithoutItInTheSourcesHelloIsRefused() throws {
        let packed = try ZstdCompressor(level: 1).compress(textBytes(4096)[...])
        var data = StreamBuilder.source(encodings: [.raw, .deflate], version: .v2)
        data.add(.deviceData(DeviceData(phase: .precopy, encoding: .zstd, originalLength: 4096, payload: packed)), device: 0)
        #expect(throws: WireError.encodingNotAnnounced(frame: .deviceData, encoding: "zstd")) { try decodeMessages(data.bytes, peer: .source) }

        var pages = StreamBuilder.source(encodings: [.raw, .deflate], version: .v2)
        pages.add(.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 0, pageCount: 1, encoding: .zstd, payload: packed)])))
        #expect(throws: WireError.encodingNotAnnounced(frame: .pages, encoding: "zstd")) { try decodeMessages(pages.bytes, peer: .source) }

        var listed = StreamBuilder.source(encodings: [.raw, .zstd], version: .v2)
        listed.add(.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 0, pageCount: 1, encoding: .zstd, payload: packed)])))
        _ = try decodeMessages(listed.bytes, peer: .source)
    }

    /// zstd belongs to version 2 (PROTOCOL.md §10): a version-1 HELLO that lists it is
    /// an unknown encoding from either side, as for a peer built before zstd.
    @Test func aVersionOneHelloListingZstdIsRefused() throws {
        for role in [Role.source, .destination] {
            var s = StreamBuilder()
            s.add(.hello(testHello(role: role, encodings: [.raw, .deflate, .zstd])))
            #expect(throws: WireError.unknownEncoding(frame: .hello, value: 2)) {
                try decodeAll(s.bytes, peer: role)
            }
        }
    }

    /// The frame layer bounds a zstd payload's declared size like deflate's.
    @Test func declaredSizesAboveTheLimitAreRefusedAtParse() throws {
        var data = StreamBuilder.source(encodings: [.raw, .zstd], version: .v2)
        data.add(.deviceData(DeviceData(phase: .precopy, encoding: .zstd, originalLength: (16 << 20) + 1, payload: [1, 2, 3])), device: 0)
        #expect(throws: WireError.inflatedTooLarge(frame: .deviceData, declared: (16 << 20) + 1, limit: 16 << 20)) { try decodeMessages(data.bytes, peer: .source) }

        var pages = StreamBuilder.source(encodings: [.raw, .zstd], version: .v2)
        pages.add(.pages(Pages(pageSize: 2 << 20, segments: [PageSegment(startPFN: 0x10_0000, pageCount: 9, encoding: .zstd, payload: [1])])))
        #expect(throws: WireError.inflatedTooLarge(frame: .pages, declared: 9 * (2 << 20), limit: 16 << 20)) { try decodeMessages(pages.bytes, peer: .source) }
    }

    /// zstd segments take in zero runs of up to `zstdZeroGapPages` pages between data
    /// (each segment's frame starts without context); longer runs, runs at an edge of the
    /// batch, and deflate keep zero segments. Decoding gives the pages back either way.
    @Test func zstdBridgesShortZeroRunsBetweenData() throws {
        let ps = 4096
        let zero = [UInt8](repeating: 0, count: ps)
        let gap = PayloadCompressor.zstdZeroGapPages
        // zero, text, zero×gap, text, zero×(gap+1), text, zero
        var bytes = zero + textBytes(ps)
        for _ in 0..<gap { bytes += zero }
        bytes += textBytes(2 * ps)
        for _ in 0...gap { bytes += zero }
        bytes += textBytes(ps) + zero
        let zstd = try PayloadCompressor(policy: .zstd(level: 3), zstdAccepted: true)
        let segments = try zstd.encodePages(startPFN: 0, pageSize: ps, bytes: bytes)
        #expect(segments.map(\.encoding) == [.zero, .zstd, .zero, .zstd, .zero])
        #expect(segments.map(\.pageCount) == [1, UInt32(1 + gap + 2), UInt32(gap + 1), 1, 1])
        let deflate = try PayloadCompressor(policy: .zstd(level: 3), zstdAccepted: false)
        #expect(try deflate.encodePages(startPFN: 0, pageSize: ps, bytes: bytes).map(\.encoding) == [.zero, .deflate, .zero, .deflate, .zero, .deflate, .zero])
        let decompressor = try PayloadDecompressor()
        #expect(try segments.flatMap { try decompressor.decode($0, pageSize: ps) } == bytes)
    }

    /// Random pages between text pages under `auto`: zstd skips them by itself, so they
    /// stay in one segment with the text; deflate spends time on them, so `auto` spots
    /// them and sends them raw; a raw batch does not classify at all (one raw segment).
    /// In a compressed batch the random pages' bytes count in the codec's input and
    /// output, so every level's ratio is over the same wire bytes.
    @Test func autoLeavesRandomPagesToZstd() throws {
        var rng = SeededRNG(seed: 11)
        let ps = 4096
        var bytes: [UInt8] = []
        for i in 0..<32 { bytes += i % 2 == 0 ? rng.bytes(ps) : textBytes(ps) }
        let decompressor = try PayloadDecompressor()

        for level in [-1, 3, 6] {
            let zstd = try PayloadCompressor(policy: .auto, zstdAccepted: true)
            let one = try zstd.encodePages(startPFN: 0, pageSize: ps, bytes: bytes, choice: .codec(.zstd(level: level)))
            #expect(one.map(\.encoding) == [.zstd] && one.map(\.pageCount) == [32])
            #expect(zstd.counters.pagesLookingRandom == 0 && zstd.counters.codecBytesIn == bytes.count)
            #expect(try one.flatMap { try decompressor.decode($0, pageSize: ps) } == bytes)
        }

        let deflate = try PayloadCompressor(policy: .auto, zstdAccepted: true)
        let split = try deflate.encodePages(startPFN: 0, pageSize: ps, bytes: bytes, choice: .codec(.deflate(level: 1)))
        #expect(split.count == 32 && deflate.counters.pagesLookingRandom == 16)
        #expect(split.enumerated().allSatisfy { i, s in s.encoding == (i % 2 == 0 ? .raw : .deflate) })
        #expect(deflate.counters.codecBytesIn == bytes.count, "the random pages count at their raw size")
        #expect(deflate.counters.codecBytesOut > 16 * ps && deflate.counters.codecBytesOut < bytes.count)
        #expect(try split.flatMap { try decompressor.decode($0, pageSize: ps) } == bytes)

        let raw = try PayloadCompressor(policy: .auto, zstdAccepted: true)
        let whole = try raw.encodePages(startPFN: 0, pageSize: ps, bytes: bytes, choice: .raw)
        #expect(whole.map(\.encoding) == [.raw] && whole.map(\.pageCount) == [32])
        #expect(raw.counters.pagesLookingRandom == 0 && raw.counters.codecBytesIn == 0)
    }

    /// zstd segments run up to 1 MiB (each starts without context, and zstd stores an
    /// incompressible block raw by itself); deflate keeps 256 KiB segments.
    @Test func zstdSegmentsRunToOneMebibyte() throws {
        let ps = 4096
        let bytes = textBytes(300 * ps)
        let zstd = try PayloadCompressor(policy: .zstd(level: 3), zstdAccepted: true)
        #expect(try zstd.encodePages(startPFN: 0, pageSize: ps, bytes: bytes).map(\.pageCount) == [256, 44])
        let deflate = try PayloadCompressor(policy: .zlib(level: 1))
        #expect(try deflate.encodePages(startPFN: 0, pageSize: ps, bytes: bytes).map(\.pageCount) == [64, 64, 64, 64, 44])
    }
}
