import Foundation
import MigrationEngine
import VFIODevice
import VFIOSimulator

/// The benchmark's deterministic input: a guest-memory file and a device-state
/// image made of 4 KiB pages, 25 % zero, 50 % real binary content (pages of
/// shared libraries), 25 % seeded random, interleaved by a seeded shuffle over
/// both files together.
struct BenchCorpus {
    static let pageSize = 4096
    let memoryPath: String
    let statePath: String
    let memoryBytes: UInt64
    let stateBytes: UInt64
    var totalBytes: UInt64 { memoryBytes + stateBytes }
    /// Pages of each kind over both files.
    var zeroPages = 0, binaryPages = 0, randomPages = 0
    var libraries: [String] = []
    var libraryBytes: UInt64 = 0
    var seconds: Double = 0

    /// Where the binary pages come from, first match wins: the Swift toolchain's
    /// runtime libraries, else the system's.
    static func libraryFiles() -> [String] {
        let dirs = ["/opt/swift/usr/lib/swift/linux", "/usr/lib/swift/linux", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"]
        for dir in dirs {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { continue }
            let libs = names.filter { $0.hasSuffix(".so") || $0.contains(".so.") }.sorted()
                .map { "\(dir)/\($0)" }
                .filter { (try? FileManager.default.attributesOfItem(atPath: $0)[.type] as? FileAttributeType) == .typeRegular }
            if !libs.isEmpty { return libs }
        }
        return []
    }

    static func generate(directory: String, memoryBytes: UInt64, stateBytes: UInt64, seed: UInt64) throws -> BenchCorpus {
        let start = ContinuousClock.now
        let ps = UInt64(pageSize)
        guard memoryBytes % ps == 0, stateBytes % ps == 0, memoryBytes > 0, stateBytes > 0 else {
            throw CLIError.config("memory and state sizes must be positive multiples of \(pageSize)")
        }
        var corpus = BenchCorpus(memoryPath: "\(directory)/corpus.mem", statePath: "\(directory)/state.img",
                                 memoryBytes: memoryBytes, stateBytes: stateBytes)
        let memPages = Int(memoryBytes / ps), statePages = Int(stateBytes / ps)
        let total = memPages + statePages
        // Exact proportions, then a seeded Fisher–Yates shuffle: 0 zero, 1–2 binary, 3 random.
        var kinds = [UInt8](repeating: 0, count: total)
        for i in 0..<total { kinds[i] = UInt8(i % 4) }
        var rng = SplitMix64(seed: seed)
        for i in stride(from: total - 1, to: 0, by: -1) {
            let j = Int(rng.next() % UInt64(i + 1))
            kinds.swapAt(i, j)
        }
        let libs = libraryFiles()
        guard !libs.isEmpty else { throw CLIError.config("no shared libraries found for the binary pages") }
        var binary = LibraryPages(files: libs)
        var random = SplitMix64(seed: seed ^ 0xC0FF_EE00_D15E_A5E5)
        let batch = 256
        for (path, range) in [(corpus.memoryPath, 0..<memPages), (corpus.statePath, memPages..<total)] {
            guard FileManager.default.createFile(atPath: path, contents: nil),
                  let out = FileHandle(forWritingAtPath: path) else { throw CLIError.config("cannot create \(path)") }
            defer { try? out.close() }
            var p = range.lowerBound
            var buffer = [UInt8](repeating: 0, count: batch * pageSize)
            while p < range.upperBound {
                let n = min(batch, range.upperBound - p)
                for k in 0..<n {
                    let base = k * pageSize
                    switch kinds[p + k] {
                    case 0:
                        for i in base..<(base + pageSize) { buffer[i] = 0 }
                        corpus.zeroPages += 1
                    case 3:
                        var i = base
                        while i < base + pageSize {
                            var r = random.next()
                            for _ in 0..<8 { buffer[i] = UInt8(truncatingIfNeeded: r); r >>= 8; i += 1 }
                        }
                        corpus.randomPages += 1
                    default:
                        let page = try binary.next()
                        buffer.replaceSubrange(base..<(base + pageSize), with: page)
                        corpus.binaryPages += 1
                    }
                }
                out.write(Data(buffer[0..<(n * pageSize)]))
                p += n
            }
        }
        corpus.libraries = libs
        corpus.libraryBytes = binary.bytesRead
        corpus.seconds = (ContinuousClock.now - start).seconds
        return corpus
    }
}

/// Consecutive non-zero 4 KiB pages of the concatenated library files, read
/// page-wise, cycling when they run out (zero pages are skipped so that the
/// corpus's zero share stays exactly 25 %).
struct LibraryPages {
    let files: [String]
    private var index = 0
    private var handle: FileHandle?
    private var pending: [UInt8] = []
    private var offset = 0
    private(set) var bytesRead: UInt64 = 0
    private var pagesSinceCycle = 0

    init(files: [String]) { self.files = files }

    mutating func next() throws -> [UInt8] {
        let ps = BenchCorpus.pageSize
        while true {
            if offset + ps <= pending.count {
                let page = Array(pending[offset..<(offset + ps)])
                offset += ps
                if page.contains(where: { $0 != 0 }) { pagesSinceCycle += 1; return page }
                continue
            }
            if handle == nil {
                if index == files.count {
                    guard pagesSinceCycle > 0 else { throw CLIError.config("the shared libraries hold no non-zero page") }
                    index = 0; pagesSinceCycle = 0
                }
                handle = FileHandle(forReadingAtPath: files[index])
                index += 1
                if handle == nil { continue }
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
}
