import Glibc

/// Guest RAM mapped from a shared file; pages addressed by PFN.
///
/// `MAP_SHARED` so that a hypervisor's memory-backend-file / memfd and this process
/// see the same pages. The raw mapping never leaves this type: reads hand out copies.
/// Concurrent access from several threads is allowed, as for real guest RAM under
/// DMA: a page read while being written may be torn, which is exactly why the
/// dirty bitmap makes the engine send it again.
public final class GuestMemory: @unchecked Sendable {  // owns a raw mapping; shared access is by design (above)
    public let size: UInt64
    public let pageSize: Int
    public var pageCount: UInt64 { size / UInt64(pageSize) }
    public let path: String?
    private let base: UnsafeMutableRawPointer
    private let kernel: VFIOKernel

    /// Maps `path`; with `create`, creates/extends it to `size`. Without `size`, uses the file's size.
    public init(path: String, size: UInt64?, create: Bool, pageSize: Int, kernel: VFIOKernel = .live) throws(DeviceError) {
        try GuestMemory.checkPageSize(pageSize)
        let fd = try DeviceError.systemCall("open guest memory", path: path) { () throws(Errno) in
            try kernel.open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0o600)
        }
        defer { try? kernel.close(fd) }  // the mapping keeps the file referenced
        let fileSize = UInt64(max(0, try DeviceError.systemCall("fstat guest memory", path: path) { () throws(Errno) in try kernel.fileSize(fd) }))
        let wanted = size ?? fileSize
        if fileSize < wanted {
            guard create else {
                throw .invalidArgument(operation: "map guest memory \(path)",
                                       detail: "file has \(fileSize) bytes, \(wanted) asked (pass create to extend)")
            }
            try DeviceError.systemCall("ftruncate guest memory", path: path) { () throws(Errno) in try kernel.truncate(fd, off_t(wanted)) }
        }
        self.base = try GuestMemory.map(fd: fd, size: wanted, pageSize: pageSize, what: path, kernel: kernel)
        self.size = wanted
        self.pageSize = pageSize
        self.path = path
        self.kernel = kernel
    }

    /// A memfd-backed guest memory (tests, demo).
    public init(anonymousNamed name: String, size: UInt64, pageSize: Int, kernel: VFIOKernel = .live) throws(DeviceError) {
        try GuestMemory.checkPageSize(pageSize)
        let fd = try DeviceError.systemCall("memfd_create", path: name) { () throws(Errno) in try kernel.memfdCreate(name) }
        defer { try? kernel.close(fd) }
        try DeviceError.systemCall("ftruncate memfd", path: name) { () throws(Errno) in try kernel.truncate(fd, off_t(size)) }
        self.base = try GuestMemory.map(fd: fd, size: size, pageSize: pageSize, what: name, kernel: kernel)
        self.size = size
        self.pageSize = pageSize
        self.path = nil
        self.kernel = kernel
    }

    deinit {
        try? kernel.munmap(base, Int(size))
    }

    /// Allocates every page now, writable (MADV_POPULATE_WRITE). A destination
    /// does this before the source connects: page allocation leaves the
    /// migration's critical path, and a file system that cannot hold the guest
    /// (full tmpfs or hugetlbfs pool) fails here with a clear error instead of
    /// SIGBUS halfway through. Kernels without the advice (< 5.14) skip it.
    public func populate() throws(DeviceError) {
        let madvPopulateWrite: Int32 = 23
        do throws(Errno) {
            try kernel.madvise(base, Int(size), madvPopulateWrite)
        } catch where error == .invalidArgument {
            return
        } catch {
            throw .systemCall("populate guest memory (MADV_POPULATE_WRITE)", path: path, errno: error.rawValue)
        }
    }

    private static func checkPageSize(_ pageSize: Int) throws(DeviceError) {
        guard pageSize >= 512, pageSize & (pageSize - 1) == 0 else {
            throw DeviceError.invalidArgument(operation: "guest memory", detail: "page size \(pageSize) is not a power of two ≥ 512")
        }
    }

    private static func map(fd: Int32, size: UInt64, pageSize: Int, what: String, kernel: VFIOKernel) throws(DeviceError) -> UnsafeMutableRawPointer {
        guard size > 0, size % UInt64(pageSize) == 0, size <= UInt64(Int.max) else {
            throw .invalidArgument(operation: "map guest memory \(what)",
                                   detail: "size \(size) is not a positive multiple of the page size \(pageSize)")
        }
        return try DeviceError.systemCall("mmap guest memory", path: what) { () throws(Errno) in try kernel.mmap(fd, Int(size)) }
    }

    /// Byte offset of `[startPFN, startPFN+count)` after a bounds check.
    private func offset(startPFN: UInt64, count: UInt64) throws -> Int {
        let (end, overflow) = startPFN.addingReportingOverflow(count)
        guard !overflow, end <= pageCount else {
            throw DeviceError.pageOutOfRange(startPFN: startPFN, count: count, pageCount: pageCount)
        }
        return Int(startPFN) * pageSize
    }

    /// A copy of `count` pages from `startPFN`.
    public func readPages(startPFN: UInt64, count: Int) throws -> [UInt8] {
        guard count >= 0 else { throw DeviceError.invalidArgument(operation: "readPages", detail: "negative count \(count)") }
        let start = try offset(startPFN: startPFN, count: UInt64(count))
        return [UInt8](UnsafeRawBufferPointer(start: base + start, count: count * pageSize))
    }

    /// Writes whole pages from `startPFN`; `bytes.count` must be a multiple of the page size.
    public func writePages(startPFN: UInt64, bytes: [UInt8]) throws {
        guard bytes.count % pageSize == 0 else {
            throw DeviceError.invalidArgument(operation: "writePages", detail: "\(bytes.count) bytes is not a whole number of \(pageSize)-byte pages")
        }
        let start = try offset(startPFN: startPFN, count: UInt64(bytes.count / pageSize))
        bytes.withUnsafeBytes { src in
            guard let s = src.baseAddress else { return }
            (base + start).copyMemory(from: s, byteCount: src.count)
        }
    }

    public func zeroPages(startPFN: UInt64, count: Int) throws {
        guard count >= 0 else { throw DeviceError.invalidArgument(operation: "zeroPages", detail: "negative count \(count)") }
        let start = try offset(startPFN: startPFN, count: UInt64(count))
        memset(base + start, 0, count * pageSize)
    }

    public func isZeroPage(_ pfn: UInt64) throws -> Bool {
        let start = try offset(startPFN: pfn, count: 1)
        return GuestMemory.isZero(UnsafeRawBufferPointer(start: base + start, count: pageSize))
    }

    /// True when every byte of `bytes[range]` is zero (for pages the engine already copied out).
    public static func isZero(_ bytes: [UInt8], range: Range<Int>) -> Bool {
        precondition(range.lowerBound >= 0 && range.upperBound <= bytes.count, "range outside the buffer")
        return bytes.withUnsafeBytes { isZero(UnsafeRawBufferPointer(rebasing: $0[range])) }
    }

    /// Word-wide compare: OR 4×8 bytes per step, then the tail bytewise.
    static func isZero(_ buffer: UnsafeRawBufferPointer) -> Bool {
        guard let p = buffer.baseAddress else { return true }
        let n = buffer.count
        var i = 0
        while i + 32 <= n {
            let a = p.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            let b = p.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self)
            let c = p.loadUnaligned(fromByteOffset: i + 16, as: UInt64.self)
            let d = p.loadUnaligned(fromByteOffset: i + 24, as: UInt64.self)
            if (a | b | c | d) != 0 { return false }
            i += 32
        }
        while i < n {
            if p.load(fromByteOffset: i, as: UInt8.self) != 0 { return false }
            i += 1
        }
        return true
    }

    /// msync(MS_SYNC) of the whole mapping: file-backed guest RAM reaches the file.
    public func sync() throws(DeviceError) {
        try DeviceError.systemCall("msync guest memory", path: path) { () throws(Errno) in try kernel.msync(base, Int(size)) }
    }
}
