import Foundation
import Testing
import VFIODevice
import VFIOSimulator

/// The one corpus generator the demo and the benchmark share.
@Suite struct GuestCorpusTests {
    /// A small binary source of our own: page 1 is zero and must be skipped.
    static func binaryFile() throws -> String {
        let path = NSTemporaryDirectory() + "guest-corpus-\(UUID().uuidString).bin"
        var bytes = [UInt8](repeating: 0, count: 3 * 4096)
        for i in 0..<4096 { bytes[i] = UInt8(truncatingIfNeeded: i &* 7 &+ 1); bytes[8192 + i] = UInt8(truncatingIfNeeded: i &* 13 &+ 5) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    static func pages(_ corpus: inout GuestCorpus) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0xAA, count: corpus.remainingPages * 4096)
        try corpus.next(pages: corpus.remainingPages, into: &buffer)
        return buffer
    }

    @Test func proportionsAreExactlyOneQuarterZeroHalfBinaryOneQuarterRandom() throws {
        let file = try Self.binaryFile()
        defer { try? FileManager.default.removeItem(atPath: file) }
        var corpus = try GuestCorpus(pageCount: 1000, seed: 3, binaryFiles: [file])
        let bytes = try Self.pages(&corpus)
        #expect(corpus.counts == GuestCorpus.Counts(zero: 250, binary: 500, random: 250))
        let zero = (0..<1000).filter { GuestMemory.isZero(bytes, range: ($0 * 4096)..<(($0 + 1) * 4096)) }.count
        #expect(zero == 250, "binary pages never repeat the file's zero page")
        #expect(corpus.remainingPages == 0)
    }

    @Test func theSameSeedGivesTheSameBytesAndAnotherSeedOthers() throws {
        let file = try Self.binaryFile()
        defer { try? FileManager.default.removeItem(atPath: file) }
        var a = try GuestCorpus(pageCount: 64, seed: 9, binaryFiles: [file])
        var b = try GuestCorpus(pageCount: 64, seed: 9, binaryFiles: [file])
        var c = try GuestCorpus(pageCount: 64, seed: 10, binaryFiles: [file])
        let x = try Self.pages(&a)
        #expect(try Self.pages(&b) == x)
        #expect(try Self.pages(&c) != x)
    }

    @Test func fillWritesTheCorpusIntoGuestMemory() throws {
        let file = try Self.binaryFile()
        defer { try? FileManager.default.removeItem(atPath: file) }
        let memory = try GuestMemory(anonymousNamed: "corpus", size: 300 * 4096, pageSize: 4096)
        let counts = try GuestCorpus.fill(memory, seed: 5, binaryFiles: [file])
        var corpus = try GuestCorpus(pageCount: 300, seed: 5, binaryFiles: [file])
        #expect(try memory.readPages(startPFN: 0, count: 300) == Self.pages(&corpus))
        #expect(counts == corpus.counts && counts.total == 300)
    }

    @Test func binaryFilesWithoutANonZeroPageAreRefusedByName() throws {
        let path = NSTemporaryDirectory() + "guest-corpus-zero-\(UUID().uuidString).bin"
        try Data(count: 8192).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        var corpus = try GuestCorpus(pageCount: 8, seed: 1, binaryFiles: [path])
        var buffer = [UInt8](repeating: 0, count: 8 * 4096)
        #expect(throws: GuestCorpusError.noNonZeroPage(files: [path])) { try corpus.next(pages: 8, into: &buffer) }
        #expect(throws: GuestCorpusError.self) { try GuestCorpus(pageCount: 1, seed: 1, binaryFiles: []) }
        #expect(throws: GuestCorpusError.noPages) { try GuestCorpus(pageCount: 0, seed: 1, binaryFiles: [path]) }
    }
}
