import Foundation
import Glibc
import Testing
@testable import VFIODevice

/// `--memory fd:N`: a descriptor that is not what it claims is refused before
/// anything is mapped, and the refusal names it (issue 15 §1).
@Suite struct MemoryDescriptorTests {
    static let size: UInt64 = 16 * 4096

    /// A memfd of `size` bytes, opened read-write.
    static func memfd(size: UInt64 = size) throws -> Int32 {
        let fd = try VFIOKernel.live.memfdCreate("guest")
        try #require(ftruncate(fd, off_t(size)) == 0)
        return fd
    }

    static func refusal(_ fd: Int32, size: UInt64? = size) -> String? {
        do { _ = try GuestMemory(descriptor: fd, name: "fd:\(fd)", size: size, pageSize: 4096); return nil } catch { return "\(error)" }
    }

    @Test func aMemfdIsMappedSharedWithTheVMM() throws {
        let fd = try Self.memfd()
        defer { close(fd) }
        let memory = try GuestMemory(descriptor: fd, name: "fd:\(fd)", size: Self.size, pageSize: 4096)
        #expect(memory.pageCount == 16)
        #expect(memory.backing == .memory)
        try memory.writePages(startPFN: 3, bytes: [UInt8](repeating: 0xA5, count: 4096))
        // The VMM's view of the same pages (its own descriptor) sees the write.
        var byte: UInt8 = 0
        #expect(pread(fd, &byte, 1, 3 * 4096) == 1)
        #expect(byte == 0xA5)
        // Without --memory-size the descriptor's own size is taken.
        #expect(try GuestMemory(descriptor: fd, name: "fd:\(fd)", size: nil, pageSize: 4096).size == Self.size)
    }

    @Test func aClosedDescriptorIsRefused() throws {
        // The soft RLIMIT_NOFILE is never open; a descriptor closed here could be another
        // parallel test's by the time it is checked (the kernel reuses the lowest number).
        let fd = Int32(getdtablesize())
        let why = try #require(Self.refusal(fd))
        #expect(why.contains("fd:\(fd)") && why.contains("not open"), "\(why)")
    }

    @Test func aReadOnlyDescriptorIsRefused() throws {
        let fd = try Self.memfd()
        defer { close(fd) }
        // The same memfd reopened read-only, as a VMM might hand it by mistake.
        let readOnly = open("/proc/self/fd/\(fd)", O_RDONLY | O_CLOEXEC)
        try #require(readOnly >= 0)
        defer { close(readOnly) }
        let why = try #require(Self.refusal(readOnly))
        #expect(why.contains("fd:\(readOnly)") && why.contains("read-only"), "\(why)")
    }

    @Test func aSizeOtherThanMemorySizeIsRefused() throws {
        let fd = try Self.memfd(size: Self.size * 2)
        defer { close(fd) }
        let why = try #require(Self.refusal(fd))
        #expect(why.contains("fd:\(fd)") && why.contains("\(Self.size * 2) bytes") && why.contains("--memory-size"), "\(why)")
    }

    @Test func aPipeIsRefused() throws {
        var ends: [Int32] = [0, 0]
        try #require(pipe(&ends) == 0)
        defer { close(ends[0]); close(ends[1]) }
        let why = try #require(Self.refusal(ends[0]))
        #expect(why.contains("fd:\(ends[0])") && why.contains("a pipe"), "\(why)")
    }
}
