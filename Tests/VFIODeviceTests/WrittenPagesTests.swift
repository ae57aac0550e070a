import Dispatch
import Glibc
import Synchronization
import SystemPackage
import Testing
@testable import VFIODevice

/// Memory this process created zero-filled knows which pages were written since:
/// zeroing the others costs no SEEK_DATA probe and no read. Memory whose content
/// is unknown (an existing file's old pages, a VMM's descriptor) keeps the checks.
@Suite struct WrittenPagesTests {
    final class SeekCount: Sendable { let calls = Atomic<Int>(0) }

    /// The live kernel, counting SEEK_DATA probes.
    static func countingKernel(_ count: SeekCount) -> VFIOKernel {
        var kernel = VFIOKernel.live
        kernel.seekData = { fd, offset throws(Errno) in
            count.calls.add(1, ordering: .relaxed)
            return try VFIOKernel.live.seekData(fd, offset)
        }
        return kernel
    }

    static func page(_ byte: UInt8, pages: Int = 1) -> [UInt8] { [UInt8](repeating: byte, count: pages * 4096) }

    @Test func createdMemoryZeroesWrittenPagesAndProbesNothing() throws {
        let count = SeekCount()
        let mem = try GuestMemory(anonymousNamed: "written-pages", size: 200 * 4096, pageSize: 4096, kernel: Self.countingKernel(count))
        try mem.writePages(startPFN: 3, bytes: Self.page(0xA5, pages: 2))
        try mem.writePages(startPFN: 130, bytes: Self.page(0x5A))
        try mem.zeroPages(startPFN: 0, count: 200)
        for pfn: UInt64 in [3, 4, 130] { #expect(try mem.isZeroPage(pfn), "page \(pfn) not cleared") }
        // Lent pages count as written too.
        let filled = try mem.withWritablePages(startPFN: 64, count: 1) { (span: inout MutableSpan<UInt8>) -> Int in
            for i in 0..<span.count { span[i] = 7 }
            return span.count
        }
        #expect(filled.get() == 4096)
        #expect(try mem.readPages(startPFN: 64, count: 1) == Self.page(7))
        try mem.zeroPages(startPFN: 60, count: 8)
        #expect(try mem.isZeroPage(64))
        #expect(count.calls.load(ordering: .relaxed) == 0, "created memory probed SEEK_DATA")
    }

    /// A file extended by `create`: its old pages hold what they held (they are
    /// checked and cleared), the new ones are known zero. Opened again without
    /// growing, nothing is known: every zeroing probes.
    @Test func anExistingFilesOldPagesKeepTheirChecks() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let path = dir + "/ram"
        do {
            let first = try GuestMemory(path: path, size: 2 * 4096, create: true, pageSize: 4096)
            try first.writePages(startPFN: 0, bytes: Self.page(0xAB, pages: 2))
        }
        let count = SeekCount()
        let grown = try GuestMemory(path: path, size: 8 * 4096, create: true, pageSize: 4096, kernel: Self.countingKernel(count))
        try grown.zeroPages(startPFN: 0, count: 8)
        #expect(try grown.isZeroPage(0) && grown.isZeroPage(1), "old pages of the file were taken for zero")
        #expect(count.calls.load(ordering: .relaxed) == 0)

        try grown.writePages(startPFN: 5, bytes: Self.page(0xCD))
        let same = try GuestMemory(path: path, size: 8 * 4096, create: true, pageSize: 4096, kernel: Self.countingKernel(count))
        try same.zeroPages(startPFN: 4, count: 4)
        #expect(try same.isZeroPage(5))
        #expect(count.calls.load(ordering: .relaxed) == 1, "unknown content must be probed")
    }

    @Test func lentPagesAreBoundsChecked() throws {
        let mem = try GuestMemory(anonymousNamed: "lend", size: 4 * 4096, pageSize: 4096)
        var called = false
        #expect(thrownError { _ = try mem.withWritablePages(startPFN: 3, count: 2) { (_: inout MutableSpan<UInt8>) in called = true } }?.kind == "pageOutOfRange")
        #expect(thrownError { _ = try mem.withWritablePages(startPFN: 0, count: -1) { (_: inout MutableSpan<UInt8>) in called = true } }?.kind == "invalidArgument")
        #expect(!called)
        #expect(thrownError { try mem.writePages(startPFN: 3, bytes: Self.page(1, pages: 2)[...]) }?.kind == "pageOutOfRange")
    }

    /// Several threads mark disjoint ranges that share words; every bit lands.
    @Test func concurrentMarksOnDisjointRangesAllLand() {
        let written = WrittenPages(pageCount: 10_000, writtenBelow: 5)
        var unaligned: [Range<UInt64>] = [9_990..<10_000]
        for k in UInt64(0)..<8 { unaligned.append((100 + k * 37)..<(130 + k * 37)) }
        let ranges = unaligned
        DispatchQueue.concurrentPerform(iterations: ranges.count) { i in
            for pfn in ranges[i] { written.markWritten(pfn..<(pfn + 1)) }
        }
        var seen: [UInt64] = []
        written.forEachWritten(0..<10_000) { seen.append($0) }
        let expected: [UInt64] = Array(0..<5) + ranges.flatMap { Array($0) }
        #expect(seen == expected.sorted())
        var part: [UInt64] = []
        written.forEachWritten(120..<140) { part.append($0) }
        #expect(part == Array(120..<130) + Array(137..<140))
    }
}
