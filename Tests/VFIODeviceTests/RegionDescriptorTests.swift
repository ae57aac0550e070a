import Foundation
import Glibc
import Testing
@testable import VFIODevice

/// `--device NAME=file:fd:N[@OFFSET]`: the region on a descriptor the VMM passed,
/// and the refusals, each naming it (issue 15 §1).
@Suite struct RegionDescriptorTests {
    static func regionFile(bytes: Int) throws -> Int32 {
        let fd = try VFIOKernel.live.memfdCreate("region")
        try #require(ftruncate(fd, off_t(bytes)) == 0)
        return fd
    }

    static func refusal(_ fd: Int32, offset: UInt64 = 0, size: UInt64? = nil) -> String? {
        do { _ = try FileRegion(descriptor: fd, name: "fd:\(fd)", baseOffset: offset, size: size); return nil } catch { return "\(error)" }
    }

    @Test func aRegionFileAtAnOffsetIsUsedThroughItsOwnDuplicate() throws {
        let fd = try Self.regionFile(bytes: 8192)
        let region = try FileRegion(descriptor: fd, name: "fd:\(fd)", baseOffset: 4096, size: nil)
        #expect(region.regionSize == 4096 && region.baseOffset == 4096)
        #expect(region.fd != fd, "a duplicate: the VMM's descriptor stays its own")
        close(fd)
        _ = try region.read32(at: 0)  // still readable after the VMM closed its copy
    }

    @Test func refusalsNameTheDescriptor() throws {
        let fd = try Self.regionFile(bytes: 8192)
        defer { close(fd) }
        let readOnly = open("/proc/self/fd/\(fd)", O_RDONLY | O_CLOEXEC)
        try #require(readOnly >= 0)
        defer { close(readOnly) }
        var ends: [Int32] = [0, 0]
        try #require(pipe(&ends) == 0)
        defer { close(ends[0]); close(ends[1]) }
        // Not a descriptor that was opened and closed here: tests run in parallel, and the
        // kernel hands out the lowest free number, so another test's open() took it (CI
        // saw fd 33 come back read-only). The soft RLIMIT_NOFILE itself is never open.
        let closed = Int32(getdtablesize())
        for (descriptor, offset, words) in [(closed, UInt64(0), ["not open"]), (readOnly, 0, ["read-only"]),
                                            (ends[1], 0, ["a pipe"]), (fd, 8192 - 32, ["no 64-byte region header"])] {
            let why = try #require(Self.refusal(descriptor, offset: offset))
            #expect(why.contains("fd:\(descriptor)"), "\(why)")
            for word in words { #expect(why.contains(word), "\(why)") }
        }
    }
}
