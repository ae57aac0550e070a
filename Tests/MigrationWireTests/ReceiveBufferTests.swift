import Testing
@testable import MigrationWire

/// The receiver's read path: bytes decrypted straight into the decoder's buffer,
/// as much as the pending header or frame still needs, payloads handed out as
/// views of that buffer.
@Suite struct ReceiveBufferTests {
    /// Serves `stream` to `fill` the way FrameReader does: `bytesWanted`, at most `chunk` a read.
    static func receive(_ stream: [UInt8], chunk: Int = .max) throws -> (frames: [Frame], reads: [Int]) {
        var decoder = FrameDecoder(peer: .source)
        var offset = 0
        var reads: [Int] = []
        var frames: [Frame] = []
        while offset < stream.count {
            let want = min(decoder.bytesWanted, chunk, stream.count - offset)
            let got = decoder.fill(maxCount: want) { span in for b in stream[offset..<(offset + want)] { span.append(b) } }
            reads.append(got)
            offset += got
            while let frame = try decoder.next() { frames.append(frame) }
        }
        try decoder.finish()
        return (frames, reads)
    }

    static func session() -> StreamBuilder {
        var rng = SeededRNG(seed: 14)
        var b = StreamBuilder.source()
        let pages = mixedPages(pages: 64, rng: &rng)
        b.add(.pages(Pages(pageSize: 4096, segments: [
            PageSegment(startPFN: 0, pageCount: 64, encoding: .raw, payload: pages),
            PageSegment(startPFN: 64, pageCount: 8, encoding: .zero, payload: []),
        ])))
        b.add(.deviceData(DeviceData(phase: .precopy, encoding: .raw, originalLength: 10_000, payload: textBytes(10_000))), device: 1)
        b.add(.keepAlive)
        b.finishDevices(2)
        return b
    }

    /// Each frame is read as its header, then the rest of it in one read: a large
    /// frame lands whole in a buffer sized for it, and nothing after it is read
    /// into that buffer (which its payload views keep).
    @Test func eachFrameIsReadAsItsHeaderThenTheRest() throws {
        let b = Self.session()
        let (frames, reads) = try Self.receive(b.bytes)
        #expect(frames == b.frames)
        let sizes = zip(b.offsets, b.offsets.dropFirst() + [b.bytes.count]).map { $1 - $0 }
        let expected = sizes.flatMap { $0 == FrameHeader.size ? [FrameHeader.size] : [FrameHeader.size, $0 - FrameHeader.size] }
        #expect(reads == expected)
    }

    /// Reads cut at any size still decode the same frames (the reader's chunk bound).
    @Test func smallReadsDecodeTheSameFrames() throws {
        let b = Self.session()
        for chunk in [1, 7, 24, 4096, 65_536] {
            let (frames, reads) = try Self.receive(b.bytes, chunk: chunk)
            #expect(frames == b.frames, "chunk \(chunk)")
            #expect(reads.allSatisfy { $0 <= chunk })
        }
    }
}
