import Testing
@testable import MigrationWire

/// Frames serialised on a worker (`FrameEncoder.prepare`, `PagesFrameBuilder`)
/// and numbered by the writer must be the very bytes the writer's encoder makes.
@Suite struct PreparedFrameTests {
    /// Pages built in place from a lent span against the segments the copying path
    /// makes of the same bytes: the frame is byte for byte the encoder's, and the
    /// compressor counts the same work either way.
    @Test func pagesBuiltInPlaceAreTheEncodersBytes() throws {
        var rng = SeededRNG(seed: 14)
        for policy in [CompressionPolicy.none, .auto, .zlib(level: 3)] {
            for round in 0..<12 {
                let ps = [512, 4096][round % 2]
                let bytes = mixedPages(pages: 1 + round * 7, pageSize: ps, rng: &rng)
                let copying = try PayloadCompressor(policy: policy), inPlace = try PayloadCompressor(policy: policy)
                let segments = try copying.encodePages(startPFN: 40, pageSize: ps, bytes: bytes)
                var builder = PagesFrameBuilder(pageSize: ps, pageCount: bytes.count / ps)
                try inPlace.encodePages(startPFN: 40, pageSize: ps, pages: bytes.span.bytes, into: &builder)
                let frame = try builder.finish()
                let expected = try FrameEncoder.frame(.pages(Pages(pageSize: UInt32(ps), segments: segments)), device: 0, sequence: 0)
                #expect(frame.bytes == expected, "\(policy), \(bytes.count / ps) pages of \(ps)")
                var (counted, reference) = (inPlace.counters, copying.counters)
                (counted.codecTime, reference.codecTime) = (.zero, .zero)
                #expect(counted == reference)
                let skeleton = segments.map { PageSegment(startPFN: $0.startPFN, pageCount: $0.pageCount, encoding: $0.encoding, payload: []) }
                #expect(frame.body == .pages(Pages(pageSize: UInt32(ps), segments: skeleton)), "the body lists the runs without payloads")
                #expect(frame.retainedBytes == Array(expected[0..<FrameHeader.size]), "a window keeps only a PAGES header")
            }
        }
    }

    /// A frame that borrows its raw pages leaves them out of its buffer and says where
    /// they go: put back at their offsets, the bytes are the copying frame's exactly, its
    /// header counts them, and compressed segments are unchanged.
    @Test func borrowedRawPagesGoBackInTheirPlaces() throws {
        var rng = SeededRNG(seed: 15)
        for policy in [CompressionPolicy.none, .auto, .zlib(level: 3)] {
            for round in 0..<8 {
                let ps = [512, 4096][round % 2]
                let bytes = mixedPages(pages: 2 + round * 9, pageSize: ps, rng: &rng)
                var copying = PagesFrameBuilder(pageSize: ps, pageCount: bytes.count / ps)
                var borrowing = PagesFrameBuilder(pageSize: ps, pageCount: bytes.count / ps, borrowingRawPages: true)
                try PayloadCompressor(policy: policy).encodePages(startPFN: 7, pageSize: ps, pages: bytes.span.bytes, into: &copying)
                try PayloadCompressor(policy: policy).encodePages(startPFN: 7, pageSize: ps, pages: bytes.span.bytes, into: &borrowing)
                let whole = try copying.finish(), lent = try borrowing.finish()
                var rebuilt: [UInt8] = [], cursor = 0
                for run in lent.borrowed {
                    rebuilt += lent.bytes[cursor..<run.offset]
                    let first = Int(run.startPFN - 7) * ps
                    rebuilt += bytes[first..<(first + run.byteCount)]
                    #expect(run.byteCount == Int(run.pageCount) * ps)
                    cursor = run.offset
                }
                rebuilt += lent.bytes[cursor...]
                #expect(rebuilt == whole.bytes, "\(policy), \(bytes.count / ps) pages of \(ps)")
                #expect(lent.byteCount == whole.bytes.count && whole.borrowed.isEmpty)
                #expect(lent.body == whole.body)
                // Raw runs of at least `minimumBorrowedBytes` are borrowed, shorter ones copied.
                guard case .pages(let p) = whole.body else { Issue.record("not PAGES"); return }
                let long = p.segments.filter { $0.encoding == .raw && Int($0.pageCount) * ps >= PagesFrameBuilder.minimumBorrowedBytes }
                #expect(lent.borrowed.map(\.startPFN) == long.map(\.startPFN), "\(policy)")
            }
        }
        // A long raw run (128 pages of 4 KiB without zero pages) is borrowed whole.
        var long = PagesFrameBuilder(pageSize: 4096, pageCount: 128, borrowingRawPages: true)
        let pages = (0..<(128 * 4096)).map { UInt8(truncatingIfNeeded: $0 % 251 + 1) }
        try PayloadCompressor(policy: .none).encodePages(startPFN: 0, pageSize: 4096, pages: pages.span.bytes, into: &long)
        let frame = try long.finish()
        #expect(frame.borrowed.reduce(0) { $0 + $1.byteCount } == pages.count && frame.bytes.count < 4096)
    }

    /// Numbering patches the sequence and nothing else, and advances the encoder
    /// as `encode` does: prepared and encoded frames interleave into the stream
    /// an encoder alone makes.
    @Test func numberedFramesInterleaveWithEncodedOnes() throws {
        var writer = FrameEncoder(), reference = FrameEncoder()
        var stream: [UInt8] = [], expected: [UInt8] = []
        let data = DeviceData(phase: .precopy, encoding: .raw, originalLength: 3, payload: [1, 2, 3], part: .whole)
        let bodies: [FrameBody] = [.deviceData(data), .keepAlive, .iterationEnd(IterationEnd(iteration: 1, pendingBytes: 9, dirtyPages: 2)),
                                   .complete, .pages(Pages(pageSize: 4096, segments: [PageSegment(startPFN: 3, pageCount: 2, encoding: .zero, payload: [])]))]
        for (i, body) in bodies.enumerated() {
            let device: UInt32 = body.type == .deviceData ? 1 : 0
            if i % 2 == 0 {
                var frame = try FrameEncoder.prepare(body, device: device)
                #expect(Array(frame.bytes[16..<24]) == [UInt8](repeating: 0, count: 8), "unnumbered until the writer numbers it")
                writer.number(&frame)
                stream += frame.bytes
                #expect(frame.retainedBytes.count == (body.type == .pages ? FrameHeader.size : frame.bytes.count))
            } else {
                stream += try writer.encode(body, device: device)
            }
            expected += try reference.encode(body, device: device)
        }
        #expect(writer.nextSequence == 5)
        #expect(stream == expected)
    }

    /// A PAGES frame of one page per segment still fits the buffer it reserved.
    @Test func alternatingPagesFitTheReservedBuffer() throws {
        let ps = 512
        var bytes: [UInt8] = []
        for i in 0..<64 { bytes += [UInt8](repeating: i % 2 == 0 ? 0 : UInt8(i), count: ps) }
        var builder = PagesFrameBuilder(pageSize: ps, pageCount: 64)
        try PayloadCompressor(policy: .none).encodePages(startPFN: 0, pageSize: ps, pages: bytes.span.bytes, into: &builder)
        let frame = try builder.finish()
        guard case .pages(let pages) = frame.body else { Issue.record("not PAGES"); return }
        #expect(pages.segments.count == 64)
        #expect(frame.bytes.count == FrameHeader.size + 8 + 64 * PageSegment.headerSize + 32 * ps)
        #expect(throws: WireError.unalignedPages(byteCount: 100, pageSize: ps)) {
            var b = PagesFrameBuilder(pageSize: ps, pageCount: 1)
            try PayloadCompressor(policy: .none).encodePages(startPFN: 0, pageSize: ps, pages: [UInt8](repeating: 1, count: 100).span.bytes, into: &b)
        }
    }
}
