internal import CVFIO
import Glibc
import SystemErrno
import SystemPackage

/// Runs `body` again for as long as it fails with EINTR: a signal arrived before
/// the call transferred anything, so the same call is still the right one.
public func retryingOnInterrupt<T>(_ body: () throws(Errno) -> T) throws(Errno) -> T {
    while true {
        do throws(Errno) {
            return try body()
        } catch where error == .interrupted {
            continue
        }
    }
}

/// Every system call the VFIO device layer makes, as one injectable value (the
/// idea of swift-system's `Syscalls.swift` + `Mocking.swift`, without globals).
/// `.live` calls the kernel; tests build a value whose closures play the kernel,
/// so the discovery and mapping code that needs real VFIO hardware runs here.
///
/// Each call either returns its result or throws the `Errno` the kernel set. Calls
/// are not retried on EINTR here: callers decide, with `retryingOnInterrupt`
/// (a partial field access must not be split, a close must not be repeated).
///
/// Offsets and modes are Swift integers (`off_t` is `Int`, `mode_t` `UInt32` on
/// 64-bit Linux): the C typealiases would tie the public API to a C module.
///
/// The device interface v2 fits: `VFIO_DEVICE_FEATURE` is a `.buffer` ioctl whose
/// first u32 is argsz (8-byte aligned buffer, as QEMU builds it), and the `data_fd`
/// it returns is one more descriptor for `read`/`write` (a stream: no offsets) and
/// `close`.
public struct VFIOKernel: Sendable {
    /// The third argument of `ioctl(2)`.
    public enum IoctlArgument {
        case none
        /// Passed by value (`VFIO_CHECK_EXTENSION`, `VFIO_SET_IOMMU`).
        case integer(Int32)
        /// A struct the kernel reads and fills in place; VFIO structs carry their
        /// size in a leading argsz, which never exceeds the buffer.
        case buffer(UnsafeMutableRawBufferPointer)
    }

    public var open: @Sendable (_ path: String, _ flags: Int32, _ mode: UInt32) throws(Errno) -> Int32
    public var close: @Sendable (_ fd: Int32) throws(Errno) -> Void
    /// Returns the ioctl's non-negative result (a version, a new descriptor, 0).
    public var ioctl: @Sendable (_ fd: Int32, _ request: UInt, _ argument: IoctlArgument) throws(Errno) -> Int32
    /// Bytes transferred; 0 at end of file.
    public var pread: @Sendable (_ fd: Int32, _ into: UnsafeMutableRawBufferPointer, _ offset: Int) throws(Errno) -> Int
    public var pwrite: @Sendable (_ fd: Int32, _ from: UnsafeRawBufferPointer, _ offset: Int) throws(Errno) -> Int
    /// `fstat(2)`'s `st_size`.
    public var fileSize: @Sendable (_ fd: Int32) throws(Errno) -> Int
    public var truncate: @Sendable (_ fd: Int32, _ size: Int) throws(Errno) -> Void
    /// `memfd_create(name, MFD_CLOEXEC)`.
    public var memfdCreate: @Sendable (_ name: String) throws(Errno) -> Int32
    /// A shared read-write mapping of `length` bytes of `fd` from offset 0.
    public var mmap: @Sendable (_ fd: Int32, _ length: Int) throws(Errno) -> UnsafeMutableRawPointer
    public var munmap: @Sendable (_ address: UnsafeMutableRawPointer, _ length: Int) throws(Errno) -> Void
    public var madvise: @Sendable (_ address: UnsafeMutableRawPointer, _ length: Int, _ advice: Int32) throws(Errno) -> Void
    /// `msync(MS_SYNC)`.
    public var msync: @Sendable (_ address: UnsafeMutableRawPointer, _ length: Int) throws(Errno) -> Void
    /// `fstatfs(2)`'s `f_type` (tmpfs, hugetlbfs, ...).
    public var fileSystemType: @Sendable (_ fd: Int32) throws(Errno) -> Int
    /// `lseek(fd, offset, SEEK_DATA)`: where the next data at or after `offset` starts,
    /// nil when there is none up to the end of the file (ENXIO).
    public var seekData: @Sendable (_ fd: Int32, _ offset: Int) throws(Errno) -> Int?
    /// `read(2)` on a stream (a v2 data_fd): bytes read, 0 at end of stream. There is
    /// no offset: a data_fd is a stream, and `pread` on it fails with ESPIPE.
    public var read: @Sendable (_ fd: Int32, _ into: UnsafeMutableRawBufferPointer) throws(Errno) -> Int
    /// `write(2)` on a stream (a v2 resume data_fd): bytes written, possibly fewer than given.
    public var write: @Sendable (_ fd: Int32, _ from: UnsafeRawBufferPointer) throws(Errno) -> Int

    public init(
        open: @escaping @Sendable (String, Int32, UInt32) throws(Errno) -> Int32,
        close: @escaping @Sendable (Int32) throws(Errno) -> Void,
        ioctl: @escaping @Sendable (Int32, UInt, IoctlArgument) throws(Errno) -> Int32,
        pread: @escaping @Sendable (Int32, UnsafeMutableRawBufferPointer, Int) throws(Errno) -> Int,
        pwrite: @escaping @Sendable (Int32, UnsafeRawBufferPointer, Int) throws(Errno) -> Int,
        fileSize: @escaping @Sendable (Int32) throws(Errno) -> Int,
        truncate: @escaping @Sendable (Int32, Int) throws(Errno) -> Void,
        memfdCreate: @escaping @Sendable (String) throws(Errno) -> Int32,
        mmap: @escaping @Sendable (Int32, Int) throws(Errno) -> UnsafeMutableRawPointer,
        munmap: @escaping @Sendable (UnsafeMutableRawPointer, Int) throws(Errno) -> Void,
        madvise: @escaping @Sendable (UnsafeMutableRawPointer, Int, Int32) throws(Errno) -> Void,
        msync: @escaping @Sendable (UnsafeMutableRawPointer, Int) throws(Errno) -> Void,
        // Defaults for a kernel played in tests: a disk file with data everywhere,
        // which is what a file system without hole reporting says (never wrong).
        fileSystemType: @escaping @Sendable (Int32) throws(Errno) -> Int = { _ in 0 },
        seekData: @escaping @Sendable (Int32, Int) throws(Errno) -> Int? = { _, offset in offset },
        // Streams default to the running kernel's: a played kernel that hands out real
        // descriptors (pipes) gets real stream semantics, ESPIPE included.
        read: @escaping @Sendable (Int32, UnsafeMutableRawBufferPointer) throws(Errno) -> Int = VFIOKernel.liveRead,
        write: @escaping @Sendable (Int32, UnsafeRawBufferPointer) throws(Errno) -> Int = VFIOKernel.liveWrite
    ) {
        self.open = open; self.close = close; self.ioctl = ioctl
        self.pread = pread; self.pwrite = pwrite
        self.fileSize = fileSize; self.truncate = truncate; self.memfdCreate = memfdCreate
        self.mmap = mmap; self.munmap = munmap; self.madvise = madvise; self.msync = msync
        self.fileSystemType = fileSystemType; self.seekData = seekData
        self.read = read; self.write = write
    }

    /// `read(2)` of the running kernel.
    public static let liveRead: @Sendable (Int32, UnsafeMutableRawBufferPointer) throws(Errno) -> Int = { fd, buffer throws(Errno) in
        try nonNegative(Glibc.read(fd, buffer.baseAddress, buffer.count))
    }

    /// `write(2)` of the running kernel.
    public static let liveWrite: @Sendable (Int32, UnsafeRawBufferPointer) throws(Errno) -> Int = { fd, buffer throws(Errno) in
        try nonNegative(Glibc.write(fd, buffer.baseAddress, buffer.count))
    }
}

extension VFIOKernel {
    /// The running kernel.
    public static let live = VFIOKernel(
        open: { path, flags, mode throws(Errno) in try nonNegative(Glibc.open(path, flags, mode)) },
        close: { fd throws(Errno) in _ = try nonNegative(Glibc.close(fd)) },
        ioctl: { fd, request, argument throws(Errno) in
            switch argument {
            case .none: return try nonNegative(Glibc.ioctl(fd, request))
            case .integer(let value): return try nonNegative(Glibc.ioctl(fd, request, value))
            case .buffer(let buffer):
                guard let address = buffer.baseAddress else { throw .invalidArgument }
                return try nonNegative(Glibc.ioctl(fd, request, address))
            }
        },
        pread: { fd, buffer, offset throws(Errno) in try nonNegative(Glibc.pread(fd, buffer.baseAddress, buffer.count, offset)) },
        pwrite: { fd, buffer, offset throws(Errno) in try nonNegative(Glibc.pwrite(fd, buffer.baseAddress, buffer.count, offset)) },
        fileSize: { fd throws(Errno) in
            var st = stat()
            _ = try nonNegative(fstat(fd, &st))
            return Int(st.st_size)
        },
        truncate: { fd, size throws(Errno) in _ = try nonNegative(ftruncate(fd, size)) },
        memfdCreate: { name throws(Errno) in try nonNegative(cvfio_memfd_create(name, 1 /* MFD_CLOEXEC */)) },
        mmap: { fd, length throws(Errno) in
            let p = Glibc.mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
            guard let p, p != MAP_FAILED else { throw .current }
            return p
        },
        munmap: { address, length throws(Errno) in _ = try nonNegative(Glibc.munmap(address, length)) },
        madvise: { address, length, advice throws(Errno) in _ = try nonNegative(Glibc.madvise(address, length, advice)) },
        msync: { address, length throws(Errno) in _ = try nonNegative(Glibc.msync(address, length, MS_SYNC)) },
        fileSystemType: { fd throws(Errno) in try nonNegative(cvfio_fs_type(fd)) },
        seekData: { fd, offset throws(Errno) in
            let next = lseek(fd, off_t(offset), CVFIO_SEEK_DATA)
            if next >= 0 { return Int(next) }
            let error = Errno.current
            if error == .noSuchAddressOrDevice { return nil }   // ENXIO: no data up to the end
            throw error
        }
    )
}

/// A libc return value, or the errno it set (every call above reports failure as -1).
private func nonNegative<T: BinaryInteger>(_ result: T) throws(Errno) -> T {
    guard result >= 0 else { throw .current }
    return result
}

extension DeviceError {
    /// Runs one system call of `operation`, turning its errno into `.systemCall`.
    static func systemCall<T>(_ operation: String, path: String?, _ body: () throws(Errno) -> T) throws(DeviceError) -> T {
        do throws(Errno) {
            return try body()
        } catch {
            throw .systemCall(operation, path: path, errno: error)
        }
    }
}

extension Array {
    /// `withUnsafeMutableBytes` for a body with a typed error (the standard one
    /// rethrows as `any Error`): how ioctl buffers reach the kernel seam.
    mutating func withMutableBytes<R, E: Error>(_ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let result: Result<R, E> = withUnsafeMutableBytes { buffer in
            do throws(E) { return .success(try body(buffer)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// `withUnsafeBytes` for a body with a typed error: how write buffers reach the seam.
    func withBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let result: Result<R, E> = withUnsafeBytes { buffer in
            do throws(E) { return .success(try body(buffer)) } catch { return .failure(error) }
        }
        return try result.get()
    }
}
