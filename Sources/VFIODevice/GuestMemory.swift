internal import CVFIO
import Glibc
import SystemPackage

/// Guest RAM mapped from a shared file; pages addressed by PFN.
///
/// `MAP_SHARED` so that a hypervisor's memory-backend-file / memfd and this process
/// see the same pages. The raw mapping never leaves this type: reads hand out copies or lend a
/// bounds-checked `RawSpan` for the length of a call.
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
    /// What backs the mapping: decides whether populating it makes sense.
    public let backing: Backing
    /// Kept open for SEEK_DATA: a hole in the file is a zero range nobody wrote.
    private let fd: Int32
    /// Memory this process created zero-filled: which pages were written since.
    /// nil when the content is unknown (a VMM's memory, an existing file).
    private let written: WrittenPages?

    public enum Backing: String, Sendable {
        /// tmpfs, memfd, hugetlbfs: the file is RAM.
        case memory
        /// A file on a disk file system (sparse or not).
        case diskFile
    }

    /// Maps `path`; with `create`, creates/extends it to `size`. Without `size`, uses the file's size.
    public init(path: String, size: UInt64?, create: Bool, pageSize: Int, kernel: VFIOKernel = .live) throws(DeviceError) {
        try GuestMemory.checkPageSize(pageSize)
        let fd = try DeviceError.systemCall("open guest memory", path: path) { () throws(Errno) in
            try kernel.open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0o600)
        }
        var ok = false
        defer { if !ok { try? kernel.close(fd) } }
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
        self.fd = fd
        self.backing = GuestMemory.backing(of: fd, kernel: kernel)
        // What the file held before is unknown; what `truncate` added reads as zero.
        let pageCount = wanted / UInt64(pageSize)
        let oldPages = (fileSize + UInt64(pageSize) - 1) / UInt64(pageSize)
        self.written = oldPages < pageCount ? WrittenPages(pageCount: pageCount, writtenBelow: oldPages) : nil
        ok = true
    }

    /// A memfd-backed guest memory (tests, demo).
    public init(anonymousNamed name: String, size: UInt64, pageSize: Int, kernel: VFIOKernel = .live) throws(DeviceError) {
        try GuestMemory.checkPageSize(pageSize)
        let fd = try DeviceError.systemCall("memfd_create", path: name) { () throws(Errno) in try kernel.memfdCreate(name) }
        var ok = false
        defer { if !ok { try? kernel.close(fd) } }
        try DeviceError.systemCall("ftruncate memfd", path: name) { () throws(Errno) in try kernel.truncate(fd, off_t(size)) }
        self.base = try GuestMemory.map(fd: fd, size: size, pageSize: pageSize, what: name, kernel: kernel)
        self.size = size
        self.pageSize = pageSize
        self.path = nil
        self.kernel = kernel
        self.fd = fd
        self.backing = .memory
        self.written = WrittenPages(pageCount: size / UInt64(pageSize), writtenBelow: 0)
        ok = true
    }

    /// Maps a descriptor the VMM handed over (`--memory fd:N`), `MAP_SHARED` so the
    /// VMM's vCPUs and this process see the same pages. `name` is how the operator
    /// wrote it (`fd:3`), for the refusals. The descriptor is duplicated
    /// (close-on-exec): the caller's stays its own, and no child inherits ours.
    public init(descriptor: Int32, name: String, size: UInt64?, pageSize: Int, kernel: VFIOKernel = .live) throws(DeviceError) {
        try GuestMemory.checkPageSize(pageSize)
        let checked = try MemoryDescriptor(fd: descriptor, name: name, expectedSize: size)
        let fd = try checked.handed.duplicate(what: "guest memory \(name)")
        var ok = false
        defer { if !ok { try? kernel.close(fd) } }
        self.base = try GuestMemory.map(fd: fd, size: checked.size, pageSize: pageSize, what: name, kernel: kernel)
        self.size = checked.size
        self.pageSize = pageSize
        self.path = name
        self.kernel = kernel
        self.fd = fd
        self.backing = GuestMemory.backing(of: fd, kernel: kernel)
        self.written = nil  // the VMM's memory: its content is the VMM's business
        ok = true
    }

    deinit {
        try? kernel.munmap(base, Int(size))
        try? kernel.close(fd)
    }

    /// tmpfs (and so memfd) or hugetlbfs is memory; anything else (or unknown) a disk file.
    private static func backing(of fd: Int32, kernel: VFIOKernel) -> Backing {
        let tmpfsMagic = 0x0102_1994, hugetlbfsMagic = 0x9584_58f6
        guard let type = try? kernel.fileSystemType(fd) else { return .diskFile }
        return [tmpfsMagic, hugetlbfsMagic].contains(type) ? .memory : .diskFile
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
            throw .systemCall("populate guest memory (MADV_POPULATE_WRITE)", path: path, errno: error)
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
    private func offset(startPFN: UInt64, count: UInt64) throws(DeviceError) -> Int {
        let (end, overflow) = startPFN.addingReportingOverflow(count)
        guard !overflow, end <= pageCount else {
            throw DeviceError.pageOutOfRange(startPFN: startPFN, count: count, pageCount: pageCount)
        }
        return Int(startPFN) * pageSize
    }

    /// A copy of `count` pages from `startPFN`.
    public func readPages(startPFN: UInt64, count: Int) throws(DeviceError) -> [UInt8] {
        guard count >= 0 else { throw DeviceError.invalidArgument(operation: "readPages", detail: "negative count \(count)") }
        let start = try offset(startPFN: startPFN, count: UInt64(count))
        return [UInt8](UnsafeRawBufferPointer(start: base + start, count: count * pageSize))
    }

    /// Lends `count` pages from `startPFN` to `body` in place, without a copy: the
    /// span cannot outlive the call, and a page the guest writes meanwhile may be
    /// torn, as with `readPages` (the dirty bitmap has it sent again).
    public func withPages<R, E: Error>(startPFN: UInt64, count: Int,
                                       _ body: (RawSpan) throws(E) -> R) throws(DeviceError) -> Result<R, E> {
        guard count >= 0 else { throw DeviceError.invalidArgument(operation: "withPages", detail: "negative count \(count)") }
        let start = try offset(startPFN: startPFN, count: UInt64(count))
        let pages = UnsafeRawBufferPointer(start: base + start, count: count * pageSize)
        return Result { () throws(E) -> R in try body(pages.bytes) }
    }

    /// Writes whole pages from `startPFN`; `bytes.count` must be a multiple of the page size.
    public func writePages(startPFN: UInt64, bytes: [UInt8]) throws(DeviceError) {
        try writePages(startPFN: startPFN, bytes: bytes[...])
    }

    /// As `writePages(startPFN:bytes:)` from part of a buffer (a payload still in
    /// the receive buffer): one copy, straight into the mapping.
    public func writePages(startPFN: UInt64, bytes: ArraySlice<UInt8>) throws(DeviceError) {
        guard bytes.count % pageSize == 0 else {
            throw DeviceError.invalidArgument(operation: "writePages", detail: "\(bytes.count) bytes is not a whole number of \(pageSize)-byte pages")
        }
        let start = try writableOffset(startPFN: startPFN, count: bytes.count / pageSize)
        bytes.withUnsafeBytes { src in
            guard let s = src.baseAddress else { return }
            (base + start).copyMemory(from: s, byteCount: src.count)
        }
    }

    /// Lends `count` pages from `startPFN` to `fill`, which must write all of them
    /// (a payload decoded straight into guest memory, without a buffer between).
    /// Bounds are checked first; the span does not outlive the call.
    public func withWritablePages<R, E: Error>(startPFN: UInt64, count: Int,
                                               _ fill: (inout MutableSpan<UInt8>) throws(E) -> R) throws(DeviceError) -> Result<R, E> {
        guard count >= 0 else { throw DeviceError.invalidArgument(operation: "withWritablePages", detail: "negative count \(count)") }
        let start = try writableOffset(startPFN: startPFN, count: count)
        let pages = UnsafeMutableBufferPointer(start: (base + start).assumingMemoryBound(to: UInt8.self), count: count * pageSize)
        var span = pages.mutableSpan
        do throws(E) { return .success(try fill(&span)) } catch { return .failure(error) }
    }

    /// The bounds check of a write, and the pages marked written before they are
    /// (a page never counts as zero while it holds data).
    private func writableOffset(startPFN: UInt64, count: Int) throws(DeviceError) -> Int {
        let start = try offset(startPFN: startPFN, count: UInt64(count))
        written?.markWritten(startPFN..<(startPFN + UInt64(count)))
        return start
    }

    /// Copies `count` pages from `sourcePFN` to `startPFN` (ranges that must not overlap):
    /// a page the destination already holds, sent again by reference (PROTOCOL.md §17).
    public func copyPages(from sourcePFN: UInt64, to startPFN: UInt64, count: Int) throws(DeviceError) {
        guard count >= 0 else { throw DeviceError.invalidArgument(operation: "copyPages", detail: "negative count \(count)") }
        let (from, bytes) = (try offset(startPFN: sourcePFN, count: UInt64(count)), count * pageSize)
        let target = try offset(startPFN: startPFN, count: UInt64(count))
        guard from + bytes <= target || target + bytes <= from else {
            throw DeviceError.invalidArgument(operation: "copyPages", detail: "PFNs \(sourcePFN) and \(startPFN) overlap over \(count) page(s)")
        }
        // Marked written only now that the copy will happen (writableOffset checks the same bounds).
        let to = try writableOffset(startPFN: startPFN, count: count)
        (base + to).copyMemory(from: base + from, byteCount: bytes)
    }

    /// Whether the `count` pages at `pfn` hold exactly `bytes` now (a copy's last check at
    /// the source; racy by nature: a page written meanwhile is sent again anyway).
    public func pagesEqual(_ pfn: UInt64, count: Int, _ bytes: RawSpan) throws(DeviceError) -> Bool {
        let start = try offset(startPFN: pfn, count: UInt64(count))
        guard bytes.byteCount == count * pageSize else { return false }
        return bytes.withUnsafeBytes { b in memcmp(base + start, b.baseAddress!, b.count) == 0 }
    }

    /// Makes the pages zero, writing only those that are not zero already. On
    /// memory this process created, a page not written since is known to be zero
    /// and is not even read. Otherwise a hole of the backing file is skipped
    /// without touching it (no page allocated, no page cache), and other pages are
    /// compared before they are cleared. A fresh destination of mostly zero guest
    /// RAM then costs reads at most, not writes.
    public func zeroPages(startPFN: UInt64, count: Int) throws(DeviceError) {
        guard count >= 0 else { throw DeviceError.invalidArgument(operation: "zeroPages", detail: "negative count \(count)") }
        let start = try offset(startPFN: startPFN, count: UInt64(count))
        if let written {
            written.forEachWritten(startPFN..<(startPFN + UInt64(count))) { pfn in clearIfNotZero(Int(pfn) * pageSize) }
            return
        }
        guard !isHole(byteOffset: start, length: count * pageSize) else { return }
        for page in 0..<count { clearIfNotZero(start + page * pageSize) }
    }

    private func clearIfNotZero(_ byteOffset: Int) {
        let at = base + byteOffset
        if !GuestMemory.isZero(UnsafeRawBufferPointer(start: at, count: pageSize)) { memset(at, 0, pageSize) }
    }

    /// True when the file has no data in the range (SEEK_DATA finds none there), so
    /// it reads as zeros. File systems without hole reporting say "data": never wrong.
    func isHole(byteOffset: Int, length: Int) -> Bool {
        guard length > 0 else { return true }
        // An error other than "no data to the end" (nil) says nothing: treat it as data.
        do throws(Errno) {
            guard let next = try kernel.seekData(fd, byteOffset) else { return true }  // no data to the end
            return next >= byteOffset + length
        } catch {
            return false
        }
    }

    /// True when no page of the range holds data in the backing file (a hole).
    public func isHole(startPFN: UInt64, count: Int) throws(DeviceError) -> Bool {
        let start = try offset(startPFN: startPFN, count: UInt64(count))
        return isHole(byteOffset: start, length: count * pageSize)
    }

    public func isZeroPage(_ pfn: UInt64) throws(DeviceError) -> Bool {
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
