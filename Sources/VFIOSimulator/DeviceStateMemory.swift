import Glibc
import SystemPackage
import VFIODevice

/// The simulated device's on-board memory. It lives in a memfd mapping, not
/// on this process's heap: a real device keeps its state on the card or in
/// the kernel, so the transport's own memory (anonymous RSS, which the
/// benchmark measures) must not be charged with it.
final class DeviceStateMemory {
    let count: Int
    private let base: UnsafeMutableRawPointer

    /// `populate`: fault every page in now (MAP_POPULATE), off the data path.
    init(count: Int, name: String = "vfio-sim-state", populate: Bool = false) {
        self.count = count
        let length = max(count, 1)
        // memfd_create through the kernel seam: the one libc call glibc hides from Swift.
        var p: UnsafeMutableRawPointer?
        if let fd = try? VFIOKernel.live.memfdCreate(name) {
            defer { Glibc.close(fd) }
            if ftruncate(fd, off_t(length)) == 0 {
                p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, 0)
            }
        }
        if p == nil || p == MAP_FAILED {
            // No memfd (e.g. out of descriptors): private anonymous memory still works.
            p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        }
        guard let p, p != MAP_FAILED else { fatalError("simulated device: cannot map \(count) bytes of device memory") }
        base = p
    }

    deinit { munmap(base, max(count, 1)) }

    private var buffer: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: base, count: count) }

    func bytes(_ range: Range<Int>) -> [UInt8] { Array(UnsafeRawBufferPointer(rebasing: buffer[range])) }

    func snapshot() -> [UInt8] { bytes(0..<count) }

    func append(_ range: Range<Int>, to out: inout [UInt8]) {
        out.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[range]))
    }

    func replace(at offset: Int, with bytes: ArraySlice<UInt8>) {
        precondition(offset >= 0 && offset + bytes.count <= count)
        bytes.withUnsafeBytes { src in
            UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<(offset + src.count)]).copyMemory(from: src)
        }
    }

    func fill(_ range: Range<Int>, with rng: inout SplitMix64) {
        rng.fill(UnsafeMutableRawBufferPointer(rebasing: buffer[range]))
    }

    /// Reads the first `count` bytes of `path` in place; false if the file is shorter or unreadable.
    func load(fromFile path: String) -> Bool {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        var done = 0
        while done < count {
            let n = try? retryingOnInterrupt { () throws(Errno) in
                let got = pread(fd, base + done, min(count - done, 1 << 20), off_t(done))
                guard got >= 0 else { throw .current }
                return got
            }
            guard let n, n > 0 else { return false }
            done += n
        }
        return true
    }

    func checksum() -> UInt64 { SimulatedStream.checksum(UnsafeRawBufferPointer(buffer)) }
}
