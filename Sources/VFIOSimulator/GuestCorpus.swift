import Foundation
import VFIODevice

/// Simulated guest content in 4 KiB pages: exactly 25 % zero, 50 % binary
/// (consecutive non-zero pages of real shared libraries, compressible like real
/// code and data), 25 % seeded random, interleaved by a seeded shuffle. The
/// same seed and binary files give the same bytes, so runs stay comparable.
/// The demo fills guest memory with it; the benchmark writes it to files.
public struct GuestCorpus {
    public static let pageSize = 4096

    /// Pages produced so far, by kind.
    public struct Counts: Sendable, Equatable {
        public var zero = 0
        public var binary = 0
        public var random = 0
        public var total: Int { zero + binary + random }
        public init(zero: Int = 0, binary: Int = 0, random: Int = 0) { (self.zero, self.binary, self.random) = (zero, binary, random) }
    }

    public let pageCount: Int
    public private(set) var counts = Counts()
    /// Where the binary pages come from.
    public var binaryFiles: [String] { binary.files }
    /// Bytes read from `binaryFiles` so far.
    public var binaryBytesRead: UInt64 { binary.bytesRead }
    public var remainingPages: Int { pageCount - position }

    /// Per page: 0 zero, 1–2 binary, 3 random (the shuffle of an exact 1:2:1 mix).
    private let kinds: [UInt8]
    private var position = 0
    private var random: SplitMix64
    private var binary: LibraryPages

    public init(pageCount: Int, seed: UInt64, binaryFiles: [String] = GuestCorpus.defaultBinaryFiles()) throws(GuestCorpusError) {
        guard pageCount > 0 else { throw .noPages }
        guard !binaryFiles.isEmpty else { throw .noBinaryFiles(searched: Self.libraryDirectories) }
        self.pageCount = pageCount
        kinds = Self.shuffledKinds(count: pageCount, seed: seed)
        random = SplitMix64(seed: seed ^ 0xC0FF_EE00_D15E_A5E5)
        binary = LibraryPages(files: binaryFiles)
    }

    /// Exact proportions, then a seeded Fisher–Yates shuffle.
    private static func shuffledKinds(count: Int, seed: UInt64) -> [UInt8] {
        var kinds = (0..<count).map { UInt8($0 % 4) }
        var rng = SplitMix64(seed: seed)
        for i in stride(from: count - 1, to: 0, by: -1) {
            kinds.swapAt(i, Int(rng.next() % UInt64(i + 1)))
        }
        return kinds
    }

    /// The next `count` pages (at most `remainingPages`) into the front of `buffer`,
    /// which must hold `count * pageSize` bytes.
    public mutating func next(pages count: Int, into buffer: inout [UInt8]) throws(GuestCorpusError) {
        precondition(count >= 0 && count <= remainingPages && buffer.count >= count * Self.pageSize, "pages beyond the corpus or the buffer")
        let ps = Self.pageSize
        for k in 0..<count {
            let range = (k * ps)..<((k + 1) * ps)
            switch kinds[position + k] {
            case 0:
                buffer.withUnsafeMutableBytes { _ = memset($0.baseAddress! + range.lowerBound, 0, ps) }
                counts.zero += 1
            case 3:
                random.fill(&buffer, range: range)
                counts.random += 1
            default:
                try binary.next(into: &buffer, at: range.lowerBound)
                counts.binary += 1
            }
        }
        position += count
    }

    /// Where the binary pages come from, first match wins: the Swift toolchain's
    /// runtime libraries, else the system's, else this program's own executable.
    public static func defaultBinaryFiles() -> [String] {
        for dir in libraryDirectories {
            let libs = sharedLibraries(in: dir)
            if !libs.isEmpty { return libs }
        }
        let own = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return FileManager.default.isReadableFile(atPath: own) ? [own] : []
    }

    static let libraryDirectories = ["/opt/swift/usr/lib/swift/linux", "/usr/lib/swift/linux", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"]

    private static func sharedLibraries(in dir: String) -> [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return [] }
        return names.filter { $0.hasSuffix(".so") || $0.contains(".so.") }.sorted()
            .map { "\(dir)/\($0)" }
            .filter { (try? FileManager.default.attributesOfItem(atPath: $0)[.type] as? FileAttributeType) == .typeRegular }
    }
}

extension GuestCorpus {
    /// Fills `memory` from PFN 0 to its end (its page size a multiple of 4 KiB)
    /// and returns the pages of each kind.
    @discardableResult
    public static func fill(_ memory: GuestMemory, seed: UInt64, binaryFiles: [String] = defaultBinaryFiles()) throws -> Counts {
        guard memory.pageSize % pageSize == 0 else { throw GuestCorpusError.pageSizeNotMultiple(memory.pageSize) }
        let perMemoryPage = memory.pageSize / pageSize
        var corpus = try GuestCorpus(pageCount: Int(memory.pageCount) * perMemoryPage, seed: seed, binaryFiles: binaryFiles)
        let batch = max(1, 256 / perMemoryPage)  // memory pages per write: about 1 MiB
        var buffer = [UInt8](repeating: 0, count: batch * memory.pageSize)
        var pfn: UInt64 = 0
        while pfn < memory.pageCount {
            let n = Int(min(UInt64(batch), memory.pageCount - pfn))
            try corpus.next(pages: n * perMemoryPage, into: &buffer)
            try memory.writePages(startPFN: pfn, bytes: n == batch ? buffer : Array(buffer[0..<(n * memory.pageSize)]))
            pfn += UInt64(n)
        }
        return corpus.counts
    }
}

public enum GuestCorpusError: Error, Equatable, CustomStringConvertible {
    case noPages
    case noBinaryFiles(searched: [String])
    /// Every binary file was read through without one non-zero page.
    case noNonZeroPage(files: [String])
    case pageSizeNotMultiple(Int)

    public var description: String {
        switch self {
        case .noPages: return "guest corpus: the corpus needs at least one page"
        case .noBinaryFiles(let dirs): return "guest corpus: no shared libraries for the binary pages in \(dirs.joined(separator: ", ")) and no readable own executable"
        case .noNonZeroPage(let files): return "guest corpus: the \(files.count) binary file(s) hold no non-zero 4 KiB page (\(files.prefix(3).joined(separator: ", "))…)"
        case .pageSizeNotMultiple(let size): return "guest corpus: guest page size \(size) is not a multiple of \(GuestCorpus.pageSize)"
        }
    }
}

/// Consecutive non-zero 4 KiB pages of the concatenated files, read 1 MiB at a
/// time, cycling when they run out (zero pages are skipped so that the corpus's
/// zero share stays exactly 25 %). Unreadable files are skipped.
struct LibraryPages {
    let files: [String]
    private var index = 0
    private var handle: FileHandle?
    private var pending: [UInt8] = []
    private var offset = 0
    private(set) var bytesRead: UInt64 = 0
    private var pagesSinceCycle = 0

    init(files: [String]) { self.files = files }

    /// The next non-zero page, copied to `buffer[at..<at + pageSize]`.
    mutating func next(into buffer: inout [UInt8], at: Int) throws(GuestCorpusError) {
        let ps = GuestCorpus.pageSize
        while true {
            if offset + ps <= pending.count {
                let page = offset..<(offset + ps)
                offset += ps
                if GuestMemory.isZero(pending, range: page) { continue }
                pagesSinceCycle += 1
                buffer.replaceSubrange(at..<(at + ps), with: pending[page])
                return
            }
            try refill()
        }
    }

    /// The next 1 MiB of whole pages from the current file, or the next file.
    private mutating func refill() throws(GuestCorpusError) {
        let ps = GuestCorpus.pageSize
        if handle == nil {
            if index == files.count {
                guard pagesSinceCycle > 0 else { throw .noNonZeroPage(files: files) }
                index = 0
                pagesSinceCycle = 0
            }
            handle = FileHandle(forReadingAtPath: files[index])
            index += 1
            if handle == nil { return }
        }
        let data = (try? handle?.read(upToCount: 1 << 20)) ?? nil
        if let data, data.count >= ps {
            // Whole pages only; a file's tail shorter than a page is dropped.
            pending = [UInt8](data.prefix(data.count / ps * ps))
            offset = 0
            bytesRead += UInt64(pending.count)
        } else {
            try? handle?.close()
            handle = nil
        }
    }
}
