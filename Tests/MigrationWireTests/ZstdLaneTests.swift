import Testing
@testable import MigrationWire

/// zstd lanes (version 4, PROTOCOL.md §15): a zstd stream per (stream, lane) whose
/// PAGES segments each decode to exactly their pages; the HELLO fields that announce
/// them, the decoder's rules, and the retained window's byte-for-byte replay.
@Suite struct ZstdLaneTests {
    static let pageSize = 4096

    /// `count` pages of text that repeats what batch `seed % 3` held: history across segments pays.
    static func batch(_ seed: Int, pages count: Int) -> [UInt8] {
        var rng = SeededRNG(seed: UInt64(seed % 3))
        var bytes = mixedPages(pages: count, pageSize: pageSize, rng: &rng)
        bytes[seed % bytes.count] ^= 0x5A  // not quite the same batch
        return bytes
    }

    static func lanes(_ n: Int) throws -> [ZstdLane] {
        try (0..<n).map { ZstdLane(index: UInt8($0), encoder: try ZstdLaneEncoder()) }
    }

    static func decodeAll(_ bytes: [UInt8], peer: Role = .source, version: ProtocolVersion = .v4,
                          configure: (inout FrameDecoder) -> Void = { _ in }) throws -> [Frame] {
        var decoder = FrameDecoder(peer: peer, version: version)
        configure(&decoder)
        decoder.feed(bytes)
        var frames: [Frame] = []
        while let message = try decoder.nextMessage() { if case .frame(let f) = message { frames.append(f) } }
        try decoder.finish()
        return frames
    }

    /// One encoded lane segment of `input` at `level`, as a PageSegment at PFN 0.
    static func segment(_ encoder: ZstdLaneEncoder, _ input: [UInt8], level: Int = 3, lane: UInt8 = 0) throws -> PageSegment {
        PageSegment(startPFN: 0, pageCount: UInt32(input.count / pageSize), encoding: .zstdLane,
                    payload: try encoder.compress(input.span.bytes, level: level), lane: lane)
    }

    // MARK: - round trip and size

    /// Batches alternate over 2 lanes with level changes (each ends a frame mid-lane),
    /// built in place, numbered, decoded and decompressed: byte-exact.
    @Test func lanesRoundTripThroughTheWholeCodec() throws {
        let lanes = try Self.lanes(2)
        let levels = [3, 3, 1, 1, -5, 3, 6, 6, 1, 3, 4, 3]
        var stream = StreamBuilder.source(encodings: [.raw, .deflate, .zstd, .zstdLanes], version: .v4, lanes: 2)
        var originals: [[UInt8]] = []
        var laneSegments = 0
        for (k, level) in levels.enumerated() {
            let compressor = try PayloadCompressor(policy: .zstd(level: level), zstdAccepted: true)
            let bytes = Self.batch(k, pages: 24)
            originals.append(bytes)
            var builder = PagesFrameBuilder(pageSize: Self.pageSize, pageCount: 24)
            try compressor.encodePages(startPFN: UInt64(k * 24), pageSize: Self.pageSize, pages: bytes.span.bytes,
                                       choice: nil, into: &builder, lane: lanes[k % 2])
            var prepared = try builder.finish()
            stream.encoder.number(&prepared)
            stream.bytes += prepared.bytes
            guard case .pages(let p) = prepared.body else { Issue.record("not PAGES"); return }
            laneSegments += p.segments.filter { $0.encoding == .zstdLane }.count
            if level >= ZstdLane.minimumLevel {
                #expect(!p.segments.contains { $0.encoding == .zstd || $0.encoding == .raw })
            } else {
                #expect(!p.segments.contains { $0.encoding == .zstdLane }, "level \(level) compresses its segments alone")
            }
            #expect(p.segments.allSatisfy { $0.encoding != .zstdLane || $0.lane == UInt8(k % 2) })
            #expect(compressor.counters.codecBytesIn > 0 && compressor.counters.codecBytesOut < compressor.counters.codecBytesIn)
        }
        #expect(laneSegments >= levels.filter { $0 >= ZstdLane.minimumLevel }.count)
        let frames = try Self.decodeAll(stream.bytes)
        let decompressor = try PayloadDecompressor(lanes: 2)
        for (k, frame) in frames.dropFirst().enumerated() {
            guard case .pages(let p) = frame.body else { Issue.record("frame \(k) is not PAGES"); return }
            var decoded: [UInt8] = []
            for s in p.segments { decoded += try decompressor.decode(s, pageSize: Self.pageSize) }
            #expect(decoded == originals[k], "batch \(k)")
        }
    }

    /// The same pages in the same segments: a lane's history makes them smaller than
    /// independent zstd frames at the same level.
    @Test func lanesAreSmallerThanIndependentFrames() throws {
        let compressor = try PayloadCompressor(policy: .zstd(level: 3), zstdAccepted: true)
        let lanes = try Self.lanes(2)
        var independent = 0, laned = 0
        for k in 0..<8 {
            let bytes = Self.batch(k, pages: 32)
            let plain = try compressor.encodePages(startPFN: 0, pageSize: Self.pageSize, bytes: bytes)
            let lane = try compressor.encodePages(startPFN: 0, pageSize: Self.pageSize, bytes: bytes, lane: lanes[k % 2])
            #expect(plain.map(\.pageCount) == lane.map(\.pageCount), "same segmentation")
            independent += plain.reduce(0) { $0 + $1.payload.count }
            laned += lane.reduce(0) { $0 + $1.payload.count }
        }
        #expect(laned * 10 < independent * 9, "lanes \(laned) bytes, independent \(independent)")
    }

    /// Without a lane, or for a deflate batch, pages go out exactly as before.
    @Test func withoutALaneOrForDeflateNothingChanges() throws {
        let bytes = Self.batch(1, pages: 16)
        let lane = try Self.lanes(1)[0]
        let zstd = try PayloadCompressor(policy: .zstd(level: 3), zstdAccepted: true)
        #expect(try zstd.encodePages(startPFN: 0, pageSize: Self.pageSize, bytes: bytes).allSatisfy { $0.encoding != .zstdLane })
        let auto = try PayloadCompressor(policy: .auto, zstdAccepted: true)
        let deflated = try auto.encodePages(startPFN: 0, pageSize: Self.pageSize, bytes: bytes, choice: .codec(.deflate(level: 1)), lane: lane)
        #expect(deflated.contains { $0.encoding == .deflate } && !deflated.contains { $0.encoding == .zstdLane })
        // zstd not accepted: the zstd choice falls back to deflate, never to a lane.
        let noZstd = try PayloadCompressor(policy: .zstd(level: 3))
        #expect(try noZstd.encodePages(startPFN: 0, pageSize: Self.pageSize, bytes: bytes, lane: lane).allSatisfy { $0.encoding != .zstdLane })
    }

    // MARK: - decoder checks

    /// `payload` decoded by `decoder` into `room` new bytes.
    @discardableResult
    static func decode(_ decoder: ZstdLaneDecoder, _ payload: [UInt8], room: Int) throws(WireError) -> [UInt8] {
        try decodedArray(count: room) { (span: inout MutableSpan<UInt8>) throws(WireError) in try decoder.decode(payload[...], into: &span, frame: .pages) }
    }

    @Test func garbageIsRefused() throws {
        #expect(throws: WireError.corruptZstdFrame(frame: .pages, detail: "a lane frame does not start with the zstd frame magic (skippable frames are not allowed)")) {
            try Self.decode(ZstdLaneDecoder(), [1, 2, 3, 4, 5, 6, 7, 8], room: 4096)
        }
        // The magic, then garbage: zstd itself refuses it.
        let garbage = ZstdDecompressor.magic + [0x00, 0x70, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
        #expect(throws: WireError.self) { try Self.decode(ZstdLaneDecoder(), garbage, room: 4096) }
    }

    @Test func aPayloadThatDecodesToFewerBytesIsRefused() throws {
        let payload = try ZstdLaneEncoder().compress(textBytes(4096).span.bytes, level: 3)
        #expect(throws: WireError.zstdLaneLengthMismatch(frame: .pages, declared: 8192, detail: "its input ends after 4096 bytes of output")) {
            try Self.decode(ZstdLaneDecoder(), payload, room: 8192)
        }
    }

    /// Two segments' bytes as one: the room fills with input left (the second spans
    /// several 128 KiB blocks; zstd takes one in before it stops for room).
    @Test func inputLeftOverIsRefused() throws {
        let encoder = try ZstdLaneEncoder()
        let first = try encoder.compress(textBytes(4096).span.bytes, level: 3)
        let second = try encoder.compress(Self.batch(0, pages: 96).span.bytes, level: 3)
        let error = #expect(throws: WireError.self) { try Self.decode(ZstdLaneDecoder(), first + second, room: 4096) }
        guard case .zstdLaneLengthMismatch(.pages, 4096, let detail)? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(detail.hasSuffix("byte(s) of input left over"), "\(detail)")
    }

    /// One block of 8 KiB into 4 KiB of room: all input used, output still pending.
    @Test func pendingOutputIsRefused() throws {
        let payload = try ZstdLaneEncoder().compress(textBytes(8192).span.bytes, level: 3)
        #expect(throws: WireError.zstdLaneLengthMismatch(frame: .pages, declared: 4096, detail: "more output is pending")) {
            try Self.decode(ZstdLaneDecoder(), payload, room: 4096)
        }
    }

    /// A frame made by hand: FHD (no content size, dictionary-ID flag as given), the
    /// window descriptor, an optional 1-byte dictionary ID, one last raw block.
    static func handFrame(windowLog: Int, dictionary: UInt8? = nil, content: [UInt8]) -> [UInt8] {
        let descriptor: UInt8 = dictionary == nil ? 0x00 : 0x01
        let block = UInt32(content.count) << 3 | 1  // last block, raw
        return ZstdDecompressor.magic + [descriptor, UInt8((windowLog - 10) << 3)] + (dictionary.map { [$0] } ?? [])
            + [UInt8(block & 0xFF), UInt8(block >> 8 & 0xFF), UInt8(block >> 16)] + content
    }

    @Test func windowsUpTo2To24AreTakenLargerOnesRefused() throws {
        let content = textBytes(4096)
        #expect(try Self.decode(ZstdLaneDecoder(), Self.handFrame(windowLog: 24, content: content), room: 4096) == content)
        #expect(throws: WireError.corruptZstdFrame(frame: .pages, detail: "lane frame window above 2^24 bytes")) {
            try Self.decode(ZstdLaneDecoder(), Self.handFrame(windowLog: 25, content: content), room: 4096)
        }
    }

    static let notAFrame = WireError.corruptZstdFrame(frame: .pages, detail: "a lane frame does not start with the zstd frame magic (skippable frames are not allowed)")
    static let needsDictionary = WireError.corruptZstdFrame(frame: .pages, detail: "lane frame needs dictionary 7 (none are used)")

    @Test func skippableFramesAndDictionariesAreRefusedAtEveryFrameStart() throws {
        let content = textBytes(2048)
        let skippable: [UInt8] = [0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]
        #expect(throws: Self.notAFrame) {
            try Self.decode(ZstdLaneDecoder(), skippable + Self.handFrame(windowLog: 20, content: content + content), room: 4096)
        }
        #expect(throws: Self.needsDictionary) {
            try Self.decode(ZstdLaneDecoder(), Self.handFrame(windowLog: 20, dictionary: 7, content: content + content), room: 4096)
        }
        // A frame that ends inside the payload: the next one is checked where it starts.
        let two = Self.handFrame(windowLog: 20, content: content) + Self.handFrame(windowLog: 20, content: content)
        #expect(try Self.decode(ZstdLaneDecoder(), two, room: 4096) == content + content)
        let withDictionary = Self.handFrame(windowLog: 20, content: content) + Self.handFrame(windowLog: 20, dictionary: 7, content: content)
        #expect(throws: Self.needsDictionary) { try Self.decode(ZstdLaneDecoder(), withDictionary, room: 4096) }
        // The same at the start of the next payload, after a frame that ended with the last one.
        let decoder = try ZstdLaneDecoder()
        #expect(try Self.decode(decoder, Self.handFrame(windowLog: 20, content: content), room: 2048) == content)
        #expect(throws: Self.notAFrame) { try Self.decode(decoder, skippable + Self.handFrame(windowLog: 20, content: content), room: 2048) }
    }

    /// After an error the lane's history is lost: the decoder refuses what follows.
    @Test func aFailedDecoderRefusesEverything() throws {
        let encoder = try ZstdLaneEncoder()
        let decoder = try ZstdLaneDecoder()
        let first = try encoder.compress(textBytes(4096).span.bytes, level: 3)
        let failure = WireError.zstdLaneLengthMismatch(frame: .pages, declared: 8192, detail: "its input ends after 4096 bytes of output")
        #expect(throws: failure) { try Self.decode(decoder, first, room: 8192) }
        let second = try encoder.compress(textBytes(4096).span.bytes, level: 3)
        #expect(throws: failure) { try Self.decode(decoder, second, room: 4096) }
    }

    /// A lane's second segment continues its stream: on another lane's decoder it fails.
    @Test func aSegmentOnTheWrongLaneFails() throws {
        let encoder = try ZstdLaneEncoder()
        let first = try Self.segment(encoder, Self.batch(1, pages: 2), lane: 0)
        let second = try Self.segment(encoder, Self.batch(2, pages: 2), lane: 0)
        let decompressor = try PayloadDecompressor(lanes: 2)
        #expect(try decompressor.decode(first, pageSize: Self.pageSize) == Self.batch(1, pages: 2))
        var moved = second
        moved.lane = 1
        #expect(throws: WireError.self) { try decompressor.decode(moved, pageSize: Self.pageSize) }
        #expect(throws: WireError.laneOutOfRange(frame: .pages, lane: 2, lanes: 2)) {
            var beyond = second
            beyond.lane = 2
            _ = try decompressor.decode(beyond, pageSize: Self.pageSize)
        }
        #expect(throws: WireError.invalidValue(frame: .hello, field: "stream lanes", value: 17)) { try PayloadDecompressor(lanes: 17) }
    }

    // MARK: - frame decoder and HELLO

    static func lanePages(lane: UInt8) throws -> FrameBody {
        .pages(Pages(pageSize: UInt32(pageSize), segments: [try segment(ZstdLaneEncoder(), textBytes(4096), lane: lane)]))
    }

    @Test func aLaneAtOrAboveTheSourcesLanesIsRefused() throws {
        var ok = StreamBuilder.source(encodings: [.raw, .zstd, .zstdLanes], version: .v4, lanes: 2)
        ok.add(try Self.lanePages(lane: 1))
        #expect(try Self.decodeAll(ok.bytes).count == 2)

        var beyond = StreamBuilder.source(encodings: [.raw, .zstd, .zstdLanes], version: .v4, lanes: 2)
        beyond.add(try Self.lanePages(lane: 2))
        #expect(throws: WireError.laneOutOfRange(frame: .pages, lane: 2, lanes: 2)) { try Self.decodeAll(beyond.bytes) }
        // The engine's count wins over the HELLO's (an extra stream has no HELLO).
        #expect(throws: WireError.laneOutOfRange(frame: .pages, lane: 1, lanes: 1)) {
            try Self.decodeAll(ok.bytes) { $0.laneCount = 1 }
        }
        var joined = FrameDecoder(joinedStream: 1, routing: testRouting, memory: [MemoryRange(startPFN: 512, pageCount: 64, pageSize: 4096)],
                                  encodings: [.raw, .zstdLanes], version: .v4)
        var extra = StreamBuilder()
        extra.add(.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 512, pageCount: 1, encoding: .zstdLane, payload: [1])])))
        joined.feed(extra.bytes)
        #expect(throws: WireError.laneOutOfRange(frame: .pages, lane: 0, lanes: 0)) { try joined.nextMessage() }
    }

    @Test func laneSegmentsNeedZstdLanesAnnounced() throws {
        var s = StreamBuilder.source(encodings: [.raw, .zstd], version: .v4, lanes: 2)
        s.add(try Self.lanePages(lane: 0))
        #expect(throws: WireError.encodingNotAnnounced(frame: .pages, encoding: "zstdLanes")) { try Self.decodeAll(s.bytes) }
    }

    /// Byte 13 is the lane of encoding 4 only; for every other encoding it stays reserved.
    @Test func theLaneByteIsReservedForOtherEncodings() throws {
        var s = StreamBuilder.source(encodings: [.raw], version: .v4, lanes: 2)
        s.add(.pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 0, pageCount: 1, encoding: .zero, payload: [], lane: 1)])))
        #expect(throws: WireError.invalidValue(frame: .pages, field: "segment reserved", value: 1)) { try Self.decodeAll(s.bytes) }
    }

    @Test func aVersion4HelloCarriesLanes() throws {
        for role in [Role.source, .destination] {
            let hello = testHello(role: role, encodings: [.raw, .deflate, .zstd, .zstdLanes], version: .v4, lanes: 16)
            var s = StreamBuilder()
            s.add(.hello(hello))
            let frames = try Self.decodeAll(s.bytes, peer: role)
            #expect(frames.first?.body == .hello(hello))
        }
        #expect(ProtocolVersion.latest >= .v4 && ProtocolVersion.v4.alpnIdentifier == "vfio-migrate/4")
        #expect(Encoding.zstdLanes.introduced == .v4 && PageEncoding.zstdLane.announcedAs == .zstdLanes)
    }

    @Test func moreThan16LanesAreRefused() throws {
        var s = StreamBuilder()
        s.add(.hello(testHello(role: .destination, encodings: [.raw, .zstdLanes], version: .v4, lanes: 17)))
        #expect(throws: WireError.invalidValue(frame: .hello, field: "stream lanes", value: 17)) { try Self.decodeAll(s.bytes, peer: .destination) }
    }

    /// Version 3: the field is reserved, and encoding 3 is unknown.
    @Test func version3KnowsNoLanes() throws {
        var lanes = StreamBuilder()
        lanes.add(.hello(testHello(role: .source, encodings: [.raw], version: .v3, lanes: 2)))
        #expect(throws: WireError.invalidValue(frame: .hello, field: "reserved", value: 2)) { try Self.decodeAll(lanes.bytes, version: .v3) }
        var encoding = StreamBuilder()
        encoding.add(.hello(testHello(role: .source, encodings: [.raw, .zstdLanes], version: .v3)))
        #expect(throws: WireError.unknownEncoding(frame: .hello, value: 3)) { try Self.decodeAll(encoding.bytes, version: .v3) }
    }

    @Test func deviceDataNeverUsesLanes() throws {
        var s = StreamBuilder.source(encodings: [.raw, .zstd, .zstdLanes], version: .v4, lanes: 2)
        s.add(.deviceData(DeviceData(phase: .precopy, encoding: .zstdLanes, originalLength: 4, payload: [1, 2, 3, 4])), device: 0)
        #expect(throws: DeviceData.refused(.zstdLanes)) { try Self.decodeAll(s.bytes) }
        #expect(throws: DeviceData.refused(.zstdLanes)) {
            try PayloadDecompressor(lanes: 1).decode(DeviceData(phase: .precopy, encoding: .zstdLanes, originalLength: 4, payload: [1, 2, 3, 4]))
        }
    }

    // MARK: - retained window

    /// A lane PAGES frame is replayed as its bytes (charged their size); a plain one as page runs.
    @Test func lanePagesAreReplayedAsTheirBytes() throws {
        let lane = try Self.lanes(1)[0]
        let compressor = try PayloadCompressor(policy: .zstd(level: 3), zstdAccepted: true)
        var encoder = FrameEncoder()
        _ = try encoder.encode(.keepAlive)  // #0 stands for HELLO
        var window = RetainedWindow(capacity: 64 << 20, deviceCount: 0)
        var frames: [PreparedFrame] = []
        for withLane in [true, false] {
            var builder = PagesFrameBuilder(pageSize: Self.pageSize, pageCount: 8)
            try compressor.encodePages(startPFN: 0, pageSize: Self.pageSize, pages: Self.batch(0, pages: 8).span.bytes,
                                       into: &builder, lane: withLane ? lane : nil)
            var frame = try builder.finish()
            encoder.number(&frame)
            window.record(frame.body, device: frame.device, encoded: frame.retainedBytes)
            frames.append(frame)
        }
        #expect(frames[0].retainedBytes == frames[0].bytes && frames[1].retainedBytes.count == FrameHeader.size)
        guard case .pages(let plain) = frames[1].body else { Issue.record("not PAGES"); return }
        let runs = plain.segments.map { RetainedWindow.PageRun(startPFN: $0.startPFN, pageCount: $0.pageCount) }
        #expect(window.retainedBytes == frames[0].bytes.count + RetainedWindow.entryCost + RetainedWindow.pageRunCost * runs.count)
        let replay = try window.replay(from: StreamPosition(nextSequence: 1, deviceBytes: []))
        #expect(replay == [.retained(frames[0].bytes), .pages(sequence: 2, pageSize: UInt32(Self.pageSize), runs: runs)])
    }
}
