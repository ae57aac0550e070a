import Glibc
import SystemPackage
import Testing
@testable import VFIODevice

@Suite struct FileRegionTests {
    /// A file holding `prefix` unrelated bytes, then a region of `size` bytes.
    func makeRegionFile(_ dir: String, prefix: Int, size: Int) -> String {
        let path = dir + "/region"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        precondition(fd >= 0)
        let bytes = [UInt8](repeating: 0xEE, count: prefix) + [UInt8](repeating: 0, count: size)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        return path
    }

    func rawBytes(_ path: String, at offset: Int, count: Int) -> [UInt8] {
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var out = [UInt8](repeating: 0, count: count)
        _ = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
        return out
    }

    @Test func fieldsAreLittleEndianAtBaseOffset() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let path = makeRegionFile(dir, prefix: 4096, size: 8192)
        let region = try FileRegion(path: path, baseOffset: 4096)
        #expect(region.regionSize == 8192)
        try region.write64(0x0102_0304_0506_0708, at: 16)
        try region.write32(0xA1B2_C3D4, at: 0)
        #expect(try region.read64(at: 16) == 0x0102_0304_0506_0708)
        #expect(try region.read32(at: 0) == 0xA1B2_C3D4)
        #expect(rawBytes(path, at: 4096 + 16, count: 8) == [8, 7, 6, 5, 4, 3, 2, 1])
        #expect(rawBytes(path, at: 4096, count: 4) == [0xD4, 0xC3, 0xB2, 0xA1])
        #expect(rawBytes(path, at: 4095, count: 1) == [0xEE])  // nothing before the base touched

        let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        try region.writeBytes(data, at: 4096)
        #expect(try region.readBytes(count: 1000, at: 4096) == data)
        #expect(rawBytes(path, at: 8192, count: 1000) == data)
    }

    @Test func refusesWhatTheHeaderCallsUndefined() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let region = try FileRegion(path: makeRegionFile(dir, prefix: 0, size: 4096))
        #expect(thrownError { try region.read32(at: 8) }?.kind == "wrongWidth")
        #expect(thrownError { try region.write64(1, at: 0) }?.kind == "wrongWidth")
        #expect(thrownError { try region.read64(at: 20) }?.kind == "misaligned")
        #expect(thrownError { try region.write32(1, at: 6) }?.kind == "misaligned")
        #expect(thrownError { try region.read64(at: 64) }?.kind == "notAHeaderField")
        #expect(thrownError { try region.readBytes(count: 8, at: 8) }?.kind == "outOfRange")      // header bytes
        #expect(thrownError { try region.writeBytes([1], at: 4096) }?.kind == "outOfRange")     // past the region
        #expect(thrownError { try region.readBytes(count: 4033, at: 64) }?.kind == "outOfRange")
        #expect(try region.readBytes(count: 4032, at: 64).count == 4032)
    }

    @Test func existingDescriptorAndEndOfFile() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let path = makeRegionFile(dir, prefix: 0, size: 1024)
        let fd = open(path, O_RDWR)
        // The region claims more than the file holds: reading past EOF is a short transfer.
        let region = try FileRegion(fd: fd, baseOffset: 0, size: 4096, closeOnDeinit: true)
        try region.write64(42, at: 8)
        #expect(try region.read64(at: 8) == 42)
        #expect(thrownError { try region.readBytes(count: 100, at: 1000) }?.kind == "shortTransfer")
        #expect(thrownError { try FileRegion(fd: -1, baseOffset: 0, size: 4096) }?.kind == "invalidArgument")
        #expect(thrownError { try FileRegion(path: dir + "/missing") }?.errnoCode == .noSuchFileOrDirectory)
        #expect(thrownError { try FileRegion(path: path, baseOffset: 1000) }?.kind == "invalidArgument")  // 24 bytes left
    }

    @Test func migrationDeviceOverAFile() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let region = try FileRegion(path: makeRegionFile(dir, prefix: 0, size: 4096))
        try region.write32(0xF0 | DeviceState.running.rawValue, at: 0)  // reserved bits set by "the driver"
        let device = MigrationDevice(name: "file0", region: region)
        try device.setState([.saving, .running])
        #expect(try region.read32(at: 0) == 0xF0 | 3)
        #expect(try device.readState() == [.saving, .running])
        #expect(try device.readRawState() == 0xF3)
    }
}
