import CKVM
import Glibc
import SystemErrno
import SystemPackage

/// A memfd of a fixed size, mapped `MAP_SHARED` once: the guest's RAM (KVM maps
/// the same pages into the guest, `vfio-migrate send` maps them again from the
/// inherited descriptor) or the dirty-log bitmap handed over with
/// `dirty-log-setup`. Whoever writes through any mapping is seen through all.
public final class SharedMemoryFile: @unchecked Sendable {  // owns the descriptor and the mapping
    public let fd: Int32
    public let byteCount: Int
    let base: UnsafeMutableRawPointer

    public init(name: String, byteCount: Int) throws(KVMError) {
        let fd = ckvm_memfd_create(name, 1)  // MFD_CLOEXEC: a child gets it only where dup2'd on purpose
        guard fd >= 0 else { throw .mapping("memfd \(name)", errno: .current) }
        guard ftruncate(fd, off_t(byteCount)) == 0 else {
            let error = Errno.current
            close(fd)
            throw .mapping("memfd \(name) of \(byteCount) bytes", errno: error)
        }
        guard let p = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            let error = Errno.current
            close(fd)
            throw .mapping("memfd \(name)", errno: error)
        }
        self.fd = fd
        self.byteCount = byteCount
        base = p
    }

    deinit {
        munmap(base, byteCount)
        close(fd)
    }

    /// The address KVM_SET_USER_MEMORY_REGION takes.
    var userspaceAddress: UInt64 { UInt64(UInt(bitPattern: base)) }

    public func write(_ bytes: [UInt8], at offset: Int) {
        precondition(offset >= 0 && offset + bytes.count <= byteCount, "write past the end of the shared memory")
        bytes.withUnsafeBytes { (base + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    /// A 16-bit little-endian word (the guest's sweep counter).
    func loadUInt16(at offset: Int) -> UInt16 { UInt16(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt16.self)) }
    func storeUInt16(_ value: UInt16, at offset: Int) { base.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt16.self) }

    /// A copy of every byte as it is now.
    public func snapshot() -> [UInt8] {
        [UInt8](UnsafeRawBufferPointer(start: base, count: byteCount))
    }

    /// Little-endian 64-bit words from the start (the dirty-log layout).
    func storeWords(_ words: [UInt64]) {
        precondition(words.count * 8 <= byteCount, "bitmap larger than its memfd")
        for (i, word) in words.enumerated() { base.storeBytes(of: word.littleEndian, toByteOffset: i * 8, as: UInt64.self) }
    }

    func loadWords(count: Int) -> [UInt64] {
        (0..<count).map { UInt64(littleEndian: base.load(fromByteOffset: $0 * 8, as: UInt64.self)) }
    }
}
