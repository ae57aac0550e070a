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

    /// Each codec a PAGES frame may use, as `encodePages` calls it.
    enum Codec: String, CaseIterable, Sendable {
        case zstdFast, zstd3, zstdLane, libdeflate, zlib

        func compressor() throws -> (PayloadCompressor, CodecChoice?, ZstdLane?) {
            switch self {
            case .zstdFast: (try PayloadCompressor(policy: .zstd(level: -1), zstdAccepted: true), nil, nil)
            case .zstd3: (try PayloadCompressor(policy: .zstd(level: 3), zstdAccepted: true), nil, nil)
            case .zstdLane: (try PayloadCompressor(policy: .zstd(level: 3), zstdAccepted: true), nil,
                             ZstdLane(index: 0, encoder: try ZstdLaneEncoder()))
            case .libdeflate: (try PayloadCompressor(policy: .auto), .codec(.deflate(level: 1)), nil)
            case .zlib: (try PayloadCompressor(policy: .zlib(level: 1)), nil, nil)
            }
        }
    }

    /// Without the copy, one-shot zstd fails this at once (every odd page, from the
    /// first match on) and libdeflate makes a stream it cannot decode; zlib and a lane's
    /// streaming zstd copy their input into their own window and pass either way (kept
    /// so a change of library or mode cannot bring the bug back unseen).
    @Test(arguments: Codec.allCases)
    func pagesThatDidNotChangeDecodeExactlyWhileOthersAreWritten(codec: Codec) throws {
        let memory = LiveMemory(count: Self.pages * Self.pageSize)
        let stable = (0..<Self.pages).map { Self.text($0 % 2 == 0 ? "even" : "odd", page: $0) }
        for (i, page) in stable.enumerated() {
            page.withUnsafeBytes { memory.bytes.baseAddress!.advanced(by: i * Self.pageSize).copyMemory(from: $0.baseAddress!, byteCount: Self.pageSize) }
        }
        let writer = memory.keepWriting(Self.text("odd", page: 1), Self.text("EVEN", page: 0))
        defer { memory.stopWriting() }
        let (compressor, choice, lane) = try codec.compressor()
        // One decoder for all rounds: a lane's history continues from frame to frame.
        let decompressor = try PayloadDecompressor(lanes: lane == nil ? 0 : 1)
        var corrupted: [Int] = []
        for _ in 0..<(lane == nil ? 400 : 100) where corrupted.isEmpty {
            var builder = PagesFrameBuilder(pageSize: Self.pageSize, pageCount: Self.pages)
            try compressor.encodePages(startPFN: 0, pageSize: Self.pageSize, pages: RawSpan(_unsafeBytes: UnsafeRawBufferPointer(memory.bytes)),
                                       choice: choice, into: &builder, lane: lane)
            let decoded = try Self.decode(try builder.finish(), with: decompressor, lanes: lane == nil ? 0 : 1)
            corrupted = (0..<Self.pages).filter { $0 % 2 == 1 && Array(decoded[($0 * Self.pageSize)..<(($0 + 1) * Self.pageSize)]) != stable[$0] }
        }
        memory.stopWriting()
        while writer.isExecuting { usleep(100) }
        #expect(corrupted.isEmpty, "unchanged pages \(corrupted) decoded to bytes they never held (\(codec))")
        #expect(compressor.counters.codecBytesIn > 0, "the codec ran")
    }

    /// Page copies (§17): what the source remembers of a page it sent must be the bytes
    /// the frame carries, not the page as the mapping held it at some other instant;
    /// else a later copy of that page would give the destination bytes it was never
    /// sent for an unchanged page. Every listed fingerprint is checked against the
    /// decoded frame while the even pages change. (Fingerprinting the mapping instead
    /// fails this for every codec and for raw pages.)
    @Test(arguments: Codec.allCases.map(Optional.some) + [nil])
    func sentFingerprintsAreOfTheBytesTheFrameCarries(codec: Codec?) throws {
        let memory = LiveMemory(count: Self.pages * Self.pageSize)
        for i in 0..<Self.pages {
            Self.text(i % 2 == 0 ? "even" : "odd", page: i).withUnsafeBytes {
                memory.bytes.baseAddress!.advanced(by: i * Self.pageSize).copyMemory(from: $0.baseAddress!, byteCount: Self.pageSize)
            }
        }
        let writer = memory.keepWriting(Self.text("odd", page: 1), Self.text("EVEN", page: 0))
        defer { memory.stopWriting() }
        // nil: `none`, raw pages copied into the frame.
        let (compressor, choice, lane) = try codec?.compressor() ?? (try PayloadCompressor(policy: .none), nil, nil)
        let decompressor = try PayloadDecompressor(lanes: lane == nil ? 0 : 1)
        let fingerprinter = PageFingerprinter.random()
        var (wrong, listed) = (0, 0)
        for _ in 0..<(lane == nil ? 200 : 60) where wrong == 0 {
            var copies = PageCopies(fingerprinter: fingerprinter, mayHold: { $0.map { $0 != nil } }, find: { $0.map { _ in nil } }, confirm: { _, _ in false })
            var builder = PagesFrameBuilder(pageSize: Self.pageSize, pageCount: Self.pages)
            try compressor.encodePages(startPFN: 0, pageSize: Self.pageSize, pages: RawSpan(_unsafeBytes: UnsafeRawBufferPointer(memory.bytes)),
                                       choice: choice, into: &builder, lane: lane, copies: &copies)
            let decoded = try Self.decode(try builder.finish(), with: decompressor, lanes: lane == nil ? 0 : 1)
            for sent in copies.sent {
                let p = Int(sent.pfn)
                listed += 1
                let page = decoded[(p * Self.pageSize)..<((p + 1) * Self.pageSize)]
                if fingerprinter.fingerprint(page.span.bytes) != sent.fingerprint || fingerprinter.sketch(page.span.bytes) != sent.sketch { wrong += 1 }
            }
        }
        memory.stopWriting()
        while writer.isExecuting { usleep(100) }
        #expect(listed > 0, "pages were listed as sent")
        #expect(wrong == 0, "\(wrong) listed fingerprint(s) are not of the bytes the frame carries (\(codec.map(\.rawValue) ?? "none"))")
    }

    /// The frame's segments through the decoder, as a destination applies them.
    static func decode(_ frame: PreparedFrame, with decompressor: PayloadDecompressor, lanes: Int) throws -> [UInt8] {
        var prepared = frame
        var stream = StreamBuilder.source(encodings: [.raw, .deflate, .zstd, .zstdLanes], version: .v4, lanes: UInt16(lanes))
        stream.encoder.number(&prepared)
        stream.bytes += prepared.bytes
        let frames = try ZstdLaneTests.decodeAll(stream.bytes, version: .v4)
        guard case .pages(let p) = frames.last?.body else { Issue.record("not PAGES"); return [] }
        return try p.segments.flatMap { try decompressor.decode($0, pageSize: pageSize) }
    }
}
