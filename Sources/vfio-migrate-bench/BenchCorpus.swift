import Foundation
import MigrationEngine  // Duration.seconds
import VFIOSimulator

/// The benchmark's deterministic input: one `GuestCorpus` written to two files,
/// a guest-memory file and a device-state image (the shuffle runs over both).
struct BenchCorpus {
    static let pageSize = GuestCorpus.pageSize
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

    static func generate(directory: String, memoryBytes: UInt64, stateBytes: UInt64, seed: UInt64) throws -> BenchCorpus {
        let start = ContinuousClock.now
        let ps = UInt64(pageSize)
        precondition(memoryBytes % ps == 0 && stateBytes % ps == 0 && memoryBytes > 0 && stateBytes > 0, "sizes are validated as whole pages")
        var corpus = BenchCorpus(memoryPath: "\(directory)/corpus.mem", statePath: "\(directory)/state.img",
                                 memoryBytes: memoryBytes, stateBytes: stateBytes)
        let memPages = Int(memoryBytes / ps), statePages = Int(stateBytes / ps)
        var pages = try GuestCorpus(pageCount: memPages + statePages, seed: seed)
        try write(&pages, count: memPages, to: corpus.memoryPath)
        try write(&pages, count: statePages, to: corpus.statePath)
        (corpus.zeroPages, corpus.binaryPages, corpus.randomPages) = (pages.counts.zero, pages.counts.binary, pages.counts.random)
        corpus.libraries = pages.binaryFiles
        corpus.libraryBytes = pages.binaryBytesRead
        corpus.seconds = (ContinuousClock.now - start).seconds
        return corpus
    }

    /// The corpus's next `count` pages into a new file, 1 MiB at a time.
    private static func write(_ pages: inout GuestCorpus, count: Int, to path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil),
              let out = FileHandle(forWritingAtPath: path) else { throw BenchError.cannotCreate(path: path) }
        defer { try? out.close() }
        let batch = 256
        var buffer = [UInt8](repeating: 0, count: batch * pageSize)
        var left = count
        while left > 0 {
            let n = min(batch, left)
            try pages.next(pages: n, into: &buffer)
            try out.write(contentsOf: buffer[0..<(n * pageSize)])
            left -= n
        }
    }
}

/// Whether two files hold the same bytes (4 MiB at a time): every migration's result is checked with it.
func benchFilesEqual(_ a: String, _ b: String) -> Bool {
    guard let x = FileHandle(forReadingAtPath: a), let y = FileHandle(forReadingAtPath: b) else { return false }
    defer { try? x.close(); try? y.close() }
    while true {
        let p = (try? x.read(upToCount: 4 << 20)) ?? nil, q = (try? y.read(upToCount: 4 << 20)) ?? nil
        if p != q { return false }
        if p == nil || p!.isEmpty { return true }
    }
}
