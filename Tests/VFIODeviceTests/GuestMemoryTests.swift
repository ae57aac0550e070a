import Glibc
import SystemPackage
import Testing
@testable import VFIODevice

@Suite struct GuestMemoryTests {
    @Test func pagesReadBackAsWrittenAndOutOfRangeIsRefused() throws {
        let mem = try makeGuest(pages: 16)
        #expect(mem.pageCount == 16 && mem.size == 65536 && mem.path == nil)
        let page = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 1) }
        try mem.writePages(startPFN: 3, bytes: page)
        #expect(try mem.readPages(startPFN: 3, count: 2) == page)
        #expect(try mem.readPages(startPFN: 2, count: 1) == [UInt8](repeating: 0, count: 4096))
        #expect(thrownError { try mem.readPages(startPFN: 15, count: 2) }?.kind == "pageOutOfRange")
        #expect(thrownError { try mem.readPages(startPFN: 16, count: 1) }?.kind == "pageOutOfRange")
        #expect(thrownError { try mem.readPages(startPFN: UInt64.max, count: 2) }?.kind == "pageOutOfRange")
        #expect(thrownError { try mem.writePages(startPFN: 16, bytes: [UInt8](repeating: 1, count: 4096)) }?.kind == "pageOutOfRange")
        #expect(thrownError { try mem.writePages(startPFN: 0, bytes: [1, 2, 3]) }?.kind == "invalidArgument")
        #expect(thrownError { try mem.isZeroPage(16) }?.kind == "pageOutOfRange")
        #expect(try mem.readPages(startPFN: 15, count: 1).count == 4096)
        try mem.zeroPages(startPFN: 3, count: 2)
        #expect(try mem.isZeroPage(3) && mem.isZeroPage(4))
        #expect(thrownError { try GuestMemory(anonymousNamed: "bad", size: 5000, pageSize: 4096) }?.kind == "invalidArgument")
        #expect(thrownError { try GuestMemory(anonymousNamed: "bad", size: 4096, pageSize: 3000) }?.kind == "invalidArgument")
    }

    /// The lent span is the mapping itself (a write shows through), bounds are
    /// checked as for reads, and the body's own error comes back as its result.
    @Test func pagesAreLentInPlaceWithinBounds() throws {
        struct Refused: Error, Equatable {}
        let mem = try makeGuest(pages: 8)
        let page = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
        try mem.writePages(startPFN: 6, bytes: page)
        let lent = try mem.withPages(startPFN: 5, count: 2) { (pages: RawSpan) -> [UInt8] in
            pages.withUnsafeBytes { Array($0) }
        }
        #expect(try lent.get() == [UInt8](repeating: 0, count: 4096) + page)
        try mem.writePages(startPFN: 6, bytes: [UInt8](repeating: 0xEE, count: 4096))
        let seen = try mem.withPages(startPFN: 6, count: 1) { (pages: RawSpan) -> UInt8 in pages.unsafeLoad(fromByteOffset: 4095, as: UInt8.self) }
        #expect(try seen.get() == 0xEE, "the span reads the mapping, not a copy made earlier")
        #expect(thrownError { try mem.withPages(startPFN: 7, count: 2) { (_: RawSpan) in 0 } }?.kind == "pageOutOfRange")
        #expect(thrownError { try mem.withPages(startPFN: UInt64.max, count: 2) { (_: RawSpan) in 0 } }?.kind == "pageOutOfRange")
        #expect(thrownError { try mem.withPages(startPFN: 0, count: -1) { (_: RawSpan) in 0 } }?.kind == "invalidArgument")
        let failed = try mem.withPages(startPFN: 0, count: 1) { (_: RawSpan) throws(Refused) -> Int in throw Refused() }
        #expect(throws: Refused()) { try failed.get() }
        let none = try mem.withPages(startPFN: 8, count: 0) { (pages: RawSpan) in pages.byteCount }
        #expect(try none.get() == 0)
    }

    @Test func zeroPageDetectionSeesEveryByte() throws {
        let mem = try makeGuest(pages: 2)
        #expect(try mem.isZeroPage(0))
        for position in [0, 7, 8, 31, 32, 4064, 4095] {
            var page = [UInt8](repeating: 0, count: 4096)
            page[position] = 0x01
            try mem.writePages(startPFN: 1, bytes: page)
            #expect(try !mem.isZeroPage(1), "nonzero byte at \(position) missed")
            #expect(!GuestMemory.isZero(page, range: 0..<4096))
            #expect(GuestMemory.isZero(page, range: (position + 1)..<4096))
        }
    }

    @Test func fileBackedSharedMapping() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let path = dir + "/ram"
        do {
            let mem = try GuestMemory(path: path, size: 8 * 4096, create: true, pageSize: 4096)
            try mem.writePages(startPFN: 5, bytes: [UInt8](repeating: 0xAB, count: 4096))
            try mem.sync()
        }
        // The file carries the page (MAP_SHARED), and a mapping without size uses the file's.
        let fd = open(path, O_RDONLY)
        var byte: UInt8 = 0
        _ = pread(fd, &byte, 1, 5 * 4096 + 100)
        close(fd)
        #expect(byte == 0xAB)
        let again = try GuestMemory(path: path, size: nil, create: false, pageSize: 4096)
        #expect(again.pageCount == 8)
        #expect(try again.readPages(startPFN: 5, count: 1) == [UInt8](repeating: 0xAB, count: 4096))
        #expect(thrownError { try GuestMemory(path: path, size: 16 * 4096, create: false, pageSize: 4096) }?.kind == "invalidArgument")
        #expect(thrownError { try GuestMemory(path: dir + "/none", size: nil, create: false, pageSize: 4096) }?.errnoCode == .noSuchFileOrDirectory)
    }

    /// Zeroing a destination page that already reads as zero writes nothing: a hole
    /// of a sparse file stays a hole (no block, no page cache), a zero page stays
    /// untouched, and only a page with data is cleared.
    @Test func zeroPagesWritesOnlyWhatIsNotZeroAlready() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let path = dir + "/sparse"
        let mem = try GuestMemory(path: path, size: 1024 * 4096, create: true, pageSize: 4096)
        #expect(mem.backing == .diskFile)
        #expect(try mem.isHole(startPFN: 0, count: 1024))
        try mem.zeroPages(startPFN: 0, count: 1024)
        try mem.sync()
        #expect(allocatedBytes(path) == 0, "zeroing a hole allocated blocks")
        try mem.writePages(startPFN: 700, bytes: [UInt8](repeating: 7, count: 2 * 4096))
        #expect(try !mem.isHole(startPFN: 512, count: 256))
        #expect(try mem.isHole(startPFN: 0, count: 512))
        try mem.zeroPages(startPFN: 512, count: 512)
        #expect(try mem.isZeroPage(700) && mem.isZeroPage(701))
        let memfd = try makeGuest(pages: 4)
        #expect(memfd.backing == .memory)
    }
}

/// Bytes the file occupies on disk (st_blocks × 512).
private func allocatedBytes(_ path: String) -> Int {
    var st = stat()
    guard stat(path, &st) == 0 else { return -1 }
    return Int(st.st_blocks) * 512
}
