import Foundation
import Synchronization
import Testing
@testable import MigrationWire

/// Pages lent from a running guest's mapping change while they are encoded. A
/// page that changed may go out torn (its dirty bit has it sent again), but a page
/// that did not change must decode exactly: an LZ codec reading the live mapping
/// matches one page against another as it was at one instant and copies literals
/// at another, so an unchanged page could decode to bytes it never held, and no
/// dirty bit would ever have it sent again (seen as a guest-memory mismatch after
/// a migration that reported success).
@Suite(.serialized) struct LiveInputTests {
    static let pageSize = 4096
    static let pages = 64

    /// Memory another thread writes while the test reads it (a stand-in for a guest
    /// mapping a device DMA-writes into).
    final class LiveMemory: @unchecked Sendable {  // owns a raw allocation; the race on its bytes is the point
        let bytes: UnsafeMutableRawBufferPointer
        private let stop = Atomic(false)
        init(count: Int) { bytes = .allocate(byteCount: count, alignment: 4096) }
        deinit { bytes.deallocate() }

        /// Rewrites the even pages in turn with `a` or `b` until `stopWriting`.
        func keepWriting(_ a: [UInt8], _ b: [UInt8]) -> Thread {
            let t = Thread { [self] in
                var round = 0
                while !stop.load(ordering: .relaxed) {
                    let page = (round % (LiveInputTests.pages / 2)) * 2
                    let source = round / (LiveInputTests.pages / 2) % 2 == 0 ? a : b
                    source.withUnsafeBytes { bytes.baseAddress!.advanced(by: page * LiveInputTests.pageSize).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                    round += 1
                }
            }
            t.start()
            return t
        }
        func stopWriting() { stop.store(true, ordering: .relaxed) }
    }

    /// Text that the odd (unchanging) pages share with what the writer puts in the even ones.
    static func text(_ word: String, page: Int) -> [UInt8] {
        var out: [UInt8] = []
        var line = 0
        while out.count < pageSize { out += Array("\(word) line \(line) of a page \(page % 3)\n".utf8); line += 1 }
        return Array(out[0..<pageSize])
    }

    /// zstd fails this without the copy at once (every odd page, from the first match on);
    /// deflate passes either way here (libdeflate's failure is a stream it cannot code).
    @Test(arguments: [CompressionPolicy.zstd(level: -1), .zstd(level: 3), .zlib(level: 1)])
    func pagesThatDidNotChangeDecodeExactlyWhileOthersAreWritten(policy: CompressionPolicy) throws {
        let memory = LiveMemory(count: Self.pages * Self.pageSize)
        let stable = (0..<Self.pages).map { Self.text($0 % 2 == 0 ? "even" : "odd", page: $0) }
        for (i, page) in stable.enumerated() {
            page.withUnsafeBytes { memory.bytes.baseAddress!.advanced(by: i * Self.pageSize).copyMemory(from: $0.baseAddress!, byteCount: Self.pageSize) }
        }
        let writer = memory.keepWriting(Self.text("odd", page: 1), Self.text("EVEN", page: 0))
        defer { memory.stopWriting() }
        let compressor = try PayloadCompressor(policy: policy, zstdAccepted: true)
        var corrupted: [Int] = []
        for _ in 0..<400 where corrupted.isEmpty {
            var builder = PagesFrameBuilder(pageSize: Self.pageSize, pageCount: Self.pages)
            try compressor.encodePages(startPFN: 0, pageSize: Self.pageSize, pages: RawSpan(_unsafeBytes: UnsafeRawBufferPointer(memory.bytes)),
                                       into: &builder)
            let decoded = try Self.decode(try builder.finish())
            corrupted = (0..<Self.pages).filter { $0 % 2 == 1 && Array(decoded[($0 * Self.pageSize)..<(($0 + 1) * Self.pageSize)]) != stable[$0] }
        }
        memory.stopWriting()
        while writer.isExecuting { usleep(100) }
        #expect(corrupted.isEmpty, "unchanged pages \(corrupted) decoded to bytes they never held (\(policy))")
    }

    /// The frame's segments through the decoder, as a destination applies them.
    static func decode(_ frame: PreparedFrame) throws -> [UInt8] {
        var prepared = frame
        var stream = StreamBuilder.source(encodings: [.raw, .deflate, .zstd], version: .v3)
        stream.encoder.number(&prepared)
        stream.bytes += prepared.bytes
        let frames = try ZstdLaneTests.decodeAll(stream.bytes, version: .v3)
        guard case .pages(let p) = frames.last?.body else { Issue.record("not PAGES"); return [] }
        let decompressor = try PayloadDecompressor()
        return try p.segments.flatMap { try decompressor.decode($0, pageSize: pageSize) }
    }
}
