import Glibc
import SystemPackage

/// A migration region reached through a file descriptor at `baseOffset`: a VFIO
/// device fd (offset from `VFIO_DEVICE_GET_REGION_INFO`), a vendor-driver emulator's
/// file, or a character device. Header fields are read and written with exactly one
/// `pread`/`pwrite` of the field's native width — this type refuses (rather than
/// issues) any access the header calls undefined. Data-section byte ranges loop over
/// short transfers. All methods are stateless over `pread`/`pwrite`, so concurrent
/// use from several threads is safe.
public final class FileRegion: MigrationRegion, Sendable {
    public let fd: Int32
    public let baseOffset: UInt64
    public let regionSize: UInt64
    public let path: String?
    private let ownsFD: Bool
    /// Keeps whatever owns `fd` (e.g. a `VFIODeviceHandle`) alive as long as the region.
    private let owner: (any AnyObject & Sendable)?
    private let kernel: VFIOKernel

    /// Opens `path` read-write. Without `size`, the region extends from `baseOffset`
    /// to the end of the file (regular files only; devices must give a size).
    public init(path: String, baseOffset: UInt64 = 0, size: UInt64? = nil, kernel: VFIOKernel = .live) throws(DeviceError) {
        let fd = try DeviceError.systemCall("open", path: path) { () throws(Errno) in
            try kernel.open(path, O_RDWR | O_CLOEXEC, 0)
        }
        var resolved = size
        if resolved == nil {
            do throws(Errno) {
                let fileSize = UInt64(max(0, try kernel.fileSize(fd)))
                if fileSize > baseOffset { resolved = fileSize - baseOffset }
            } catch {
                try? kernel.close(fd)
                throw .systemCall("fstat", path: path, errno: error)
            }
        }
        guard let regionSize = resolved, regionSize >= MigrationInfo.size else {
            try? kernel.close(fd)
            throw .invalidArgument(
                operation: "open migration region \(path)",
                detail: "region size unknown or smaller than the 64-byte header; give @OFFSET and a size for devices")
        }
        self.fd = fd
        self.baseOffset = baseOffset
        self.regionSize = regionSize
        self.path = path
        self.ownsFD = true
        self.owner = nil
        self.kernel = kernel
    }

    /// A region on a descriptor the VMM handed over (`file:fd:N[@OFFSET]`): checked
    /// open, read-write, a regular file (or a device file, given `size`), then
    /// duplicated close-on-exec and owned. `name` is how the operator wrote it.
    public convenience init(descriptor: Int32, name: String, baseOffset: UInt64, size: UInt64?,
                            kernel: VFIOKernel = .live) throws(DeviceError) {
        let what = "migration region \(name)"
        let handed = try HandedDescriptor(fd: descriptor, what: what, allowCharacterDevice: size != nil)
        let regionSize = size ?? (handed.size > baseOffset ? handed.size - baseOffset : 0)
        guard regionSize >= MigrationInfo.size else {
            throw .invalidArgument(operation: what, detail: "descriptor \(descriptor) has \(handed.size) bytes: no 64-byte region header at offset \(baseOffset)")
        }
        let fd = try handed.duplicate(what: what)
        do throws(DeviceError) {
            try self.init(fd: fd, baseOffset: baseOffset, size: regionSize, closeOnDeinit: true, owner: nil, kernel: kernel)
        } catch {
            try? kernel.close(fd)
            throw error
        }
    }

    /// Wraps an existing descriptor. With `closeOnDeinit`, the region owns it.
    public convenience init(fd: Int32, baseOffset: UInt64, size: UInt64, closeOnDeinit: Bool = false,
                            kernel: VFIOKernel = .live) throws(DeviceError) {
        try self.init(fd: fd, baseOffset: baseOffset, size: size, closeOnDeinit: closeOnDeinit, owner: nil, kernel: kernel)
    }

    init(fd: Int32, baseOffset: UInt64, size: UInt64, closeOnDeinit: Bool, owner: (any AnyObject & Sendable)?, kernel: VFIOKernel) throws(DeviceError) {
        guard fd >= 0 else { throw .invalidArgument(operation: "FileRegion", detail: "invalid descriptor \(fd)") }
        guard size >= MigrationInfo.size, !baseOffset.addingReportingOverflow(size).overflow,
              baseOffset &+ size <= UInt64(Int64.max) else {
            throw .invalidArgument(operation: "FileRegion", detail: "region [\(baseOffset), +\(size)) unusable: needs at least the 64-byte header within off_t range")
        }
        self.fd = fd
        self.baseOffset = baseOffset
        self.regionSize = size
        self.path = nil
        self.ownsFD = closeOnDeinit
        self.owner = owner
        self.kernel = kernel
    }

    deinit {
        if ownsFD { try? kernel.close(fd) }
    }

    public func read32(at offset: UInt64) throws(DeviceError) -> UInt32 {
        _ = try MigrationInfo.field(at: offset, width: 4, access: .read)
        var value: UInt32 = 0
        try fieldTransfer(.read, &value, at: offset)
        return UInt32(littleEndian: value)
    }

    public func write32(_ value: UInt32, at offset: UInt64) throws(DeviceError) {
        _ = try MigrationInfo.field(at: offset, width: 4, access: .write)
        var le = value.littleEndian
        try fieldTransfer(.write, &le, at: offset)
    }

    public func read64(at offset: UInt64) throws(DeviceError) -> UInt64 {
        _ = try MigrationInfo.field(at: offset, width: 8, access: .read)
        var value: UInt64 = 0
        try fieldTransfer(.read, &value, at: offset)
        return UInt64(littleEndian: value)
    }

    public func write64(_ value: UInt64, at offset: UInt64) throws(DeviceError) {
        _ = try MigrationInfo.field(at: offset, width: 8, access: .write)
        var le = value.littleEndian
        try fieldTransfer(.write, &le, at: offset)
    }

    public func readBytes(count: Int, at offset: UInt64) throws(DeviceError) -> [UInt8] {
        try MigrationInfo.checkDataRange(offset: offset, count: count, regionSize: regionSize, access: .read)
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withMutableBytes { (buffer) throws(DeviceError) in try rangeTransfer(.read, buffer, at: offset) }
        return bytes
    }

    public func writeBytes(_ bytes: [UInt8], at offset: UInt64) throws(DeviceError) {
        try MigrationInfo.checkDataRange(offset: offset, count: bytes.count, regionSize: regionSize, access: .write)
        var copy = bytes
        try copy.withMutableBytes { (buffer) throws(DeviceError) in try rangeTransfer(.write, buffer, at: offset) }
    }

    /// A field's bytes in place (`withUnsafeMutableBytes(of:)` rethrows only untyped
    /// errors, so the DeviceError is carried out as a value).
    private func fieldTransfer<T: FixedWidthInteger>(_ access: RegionAccess, _ field: inout T, at offset: UInt64) throws(DeviceError) {
        let result: Result<Void, DeviceError> = withUnsafeMutableBytes(of: &field) { buffer in
            do throws(DeviceError) { return .success(try fieldTransfer(access, buffer, at: offset)) } catch { return .failure(error) }
        }
        try result.get()
    }

    /// One syscall of exactly the field width: retrying a partial field access would
    /// split it into narrower accesses, which the header forbids. EINTR is retried:
    /// nothing was transferred, so the same access is still whole.
    private func fieldTransfer(_ access: RegionAccess, _ buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(DeviceError) {
        let position = off_t(baseOffset + offset)
        let n: Int
        do throws(Errno) {
            n = try retryingOnInterrupt { () throws(Errno) in try transfer(access, buffer, at: position) }
        } catch {
            let field = MigrationInfo.Field.containing(offset)?.name ?? "offset \(offset)"
            throw .deviceIOError(access, field: field, offset: offset, errno: error,
                                 reason: access == .read ? "pread failed" : "pwrite failed")
        }
        guard n == buffer.count else {
            throw .shortTransfer(access, offset: offset, expected: buffer.count, transferred: n)
        }
    }

    /// Data-section ranges: loop over short transfers and EINTR; 0 means end of file.
    private func rangeTransfer(_ access: RegionAccess, _ buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(DeviceError) {
        var done = 0
        while done < buffer.count {
            let position = off_t(baseOffset + offset + UInt64(done))
            let rest = UnsafeMutableRawBufferPointer(rebasing: buffer[done...])
            let n: Int
            do throws(Errno) {
                n = try retryingOnInterrupt { () throws(Errno) in try transfer(access, rest, at: position) }
            } catch {
                throw .deviceIOError(access, field: "data section", offset: offset + UInt64(done), errno: error,
                                     reason: access == .read ? "pread failed" : "pwrite failed")
            }
            if n == 0 { throw .shortTransfer(access, offset: offset, expected: buffer.count, transferred: done) }
            done += n
        }
    }

    private func transfer(_ access: RegionAccess, _ buffer: UnsafeMutableRawBufferPointer, at position: off_t) throws(Errno) -> Int {
        access == .read
            ? try kernel.pread(fd, buffer, position)
            : try kernel.pwrite(fd, UnsafeRawBufferPointer(buffer), position)
    }
}
