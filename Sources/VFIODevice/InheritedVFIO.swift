internal import CVFIO
import Glibc
import SystemErrno
import SystemPackage

/// VFIO descriptors a VMM handed over (`--device NAME=fd:N`, `--iommu fd:N`):
/// it opened the group and the container and owns them; we get the device (or the
/// container) already set up. Each is checked for what it is before anything
/// starts, and duplicated close-on-exec, so the VMM's number stays its own.
public enum InheritedVFIO {
    /// How Linux names an open VFIO device: the group API's anonymous inode, or the
    /// per-device character file of the cdev API (`/dev/vfio/devices/vfioN`, 6.6+).
    static let deviceLinkNames = ["anon_inode:[vfio-device]"]
    static let deviceCdevDirectory = "/dev/vfio/devices/"
    /// `/dev/vfio/vfio` is misc device 10:196 (VFIO_MINOR), whatever path it was opened by.
    static let containerMajor: UInt32 = 10
    static let containerMinor: UInt32 = 196

    /// A read-write VFIO device descriptor; returns the duplicate the caller owns.
    /// `what` names it as the operator wrote it ("device gpu0 fd:5").
    /// Checks in the order the operator needs to hear: open, what it is, then its mode.
    public static func device(_ fd: Int32, what: String) throws(DeviceError) -> Int32 {
        try checkOpen(fd, what: what)
        let target = linkTarget(fd)
        guard deviceLinkNames.contains(target) || target.hasPrefix(deviceCdevDirectory) else {
            throw .invalidArgument(operation: what, detail: "descriptor \(fd) is \(describe(fd, target)), not a VFIO device (\(deviceLinkNames[0]) or \(deviceCdevDirectory)vfioN)")
        }
        try checkReadWrite(fd, what: what)
        return try duplicate(fd, what: what)
    }

    /// A read-write VFIO container (`/dev/vfio/vfio`) speaking this VFIO API;
    /// returns the duplicate the caller owns.
    public static func container(_ fd: Int32, what: String, kernel: VFIOKernel = .live) throws(DeviceError) -> Int32 {
        try checkOpen(fd, what: what)
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .systemCall("fstat \(what)", path: nil, errno: .current) }
        guard st.st_mode & S_IFMT == S_IFCHR, major(st.st_rdev) == containerMajor, minor(st.st_rdev) == containerMinor else {
            throw .invalidArgument(operation: what, detail: "descriptor \(fd) is \(describe(fd, linkTarget(fd))), not a VFIO container (/dev/vfio/vfio)")
        }
        try checkReadWrite(fd, what: what)
        let version = try? kernel.ioctl(fd, UInt(CVFIO_GET_API_VERSION), .none)
        guard version == Int32(CVFIO_API_VERSION) else {
            throw .invalidArgument(operation: what, detail: "descriptor \(fd) reports VFIO API \(version.map { "\($0)" } ?? "none"), this tool speaks \(CVFIO_API_VERSION)")
        }
        return try duplicate(fd, what: what)
    }

    private static func checkOpen(_ fd: Int32, what: String) throws(DeviceError) {
        guard fcntl(fd, F_GETFL) >= 0 else {
            throw .invalidArgument(operation: what, detail: "descriptor \(fd) is not open (\(Errno.current.explanation))")
        }
    }

    /// Read-write: the ioctls that change device state need it.
    private static func checkReadWrite(_ fd: Int32, what: String) throws(DeviceError) {
        let flags = fcntl(fd, F_GETFL)
        guard flags & O_ACCMODE == O_RDWR else {
            throw .invalidArgument(operation: what, detail: "descriptor \(fd) is open \(flags & O_ACCMODE == O_RDONLY ? "read-only" : "write-only"); it must be read-write")
        }
    }

    private static func duplicate(_ fd: Int32, what: String) throws(DeviceError) -> Int32 {
        let copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        guard copy >= 0 else { throw .systemCall("dup \(what)", path: nil, errno: .current) }
        return copy
    }

    /// What /proc says the descriptor is (`pipe:[123]`, `/dev/null`, `/memfd:x (deleted)`).
    static func linkTarget(_ fd: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: 512)
        let n = readlink("/proc/self/fd/\(fd)", &buffer, buffer.count - 1)
        guard n > 0 else { return "" }
        return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func describe(_ fd: Int32, _ target: String) -> String {
        var st = stat()
        let kind = fstat(fd, &st) == 0 ? (st.st_mode & S_IFMT == S_IFREG ? "a regular file" : HandedDescriptor.kind(st.st_mode & S_IFMT)) : "unknown"
        return target.isEmpty ? kind : "\(kind) (\(target))"
    }

    private static func major(_ dev: UInt) -> UInt32 { UInt32(truncatingIfNeeded: ((dev >> 8) & 0xfff) | ((dev >> 32) & ~0xfff)) }
    private static func minor(_ dev: UInt) -> UInt32 { UInt32(truncatingIfNeeded: (dev & 0xff) | ((dev >> 12) & ~0xff)) }
}

/// A container the VMM handed over (`--iommu fd:N`), for `--dirty iommu`: owns
/// its duplicate, and keeps it open as long as a dirty source made from it lives.
public final class InheritedContainer: Sendable {
    public let fd: Int32

    /// `fd` is the duplicate `InheritedVFIO.container` returned.
    public init(adopting fd: Int32) { self.fd = fd }

    deinit { close(fd) }

    public func dirtyPageSource(iovaBase: UInt64 = 0) -> IOMMUDirtyPageSource {
        IOMMUDirtyPageSource(containerFD: fd, iovaBase: iovaBase, owner: self)
    }
}
