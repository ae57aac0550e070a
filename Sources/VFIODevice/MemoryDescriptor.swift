import Glibc
import SystemErrno
import SystemPackage

/// A descriptor a VMM handed over (`--memory fd:N`, `--device NAME=file:fd:N`),
/// checked before anything starts: using a descriptor that is not what it claims
/// would either fail halfway (a pipe, a closed slot) or, worse, migrate the wrong
/// bytes (a file of another size) or fault on the first page written (a read-only
/// one). Every refusal names the descriptor as the operator wrote it.
struct HandedDescriptor {
    let fd: Int32
    let size: UInt64
    let isRegularFile: Bool

    /// `what` names the use and the descriptor ("guest memory fd:3"); `allowCharacterDevice`
    /// for a region, which may live on a device file at an offset.
    init(fd: Int32, what: String, allowCharacterDevice: Bool = false) throws(DeviceError) {
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0 else {
            throw .invalidArgument(operation: what, detail: "descriptor \(fd) is not open (\(Errno.current.explanation))")
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw .invalidArgument(operation: what, detail: "fstat descriptor \(fd): \(Errno.current.explanation)")
        }
        let type = st.st_mode & S_IFMT
        guard type == S_IFREG || (allowCharacterDevice && type == S_IFCHR) else {
            throw .invalidArgument(operation: what, detail: "descriptor \(fd) is \(Self.kind(type)), not a memfd, hugetlbfs or shared file")
        }
        // The kind before the access mode: a pipe's read end is "read-only" too, but
        // "a pipe" is what the operator needs to hear.
        switch flags & O_ACCMODE {
        case O_RDWR: break
        case O_RDONLY: throw .invalidArgument(operation: what, detail: "descriptor \(fd) is open read-only; it must be read-write (MAP_SHARED memory, device state written back)")
        default: throw .invalidArgument(operation: what, detail: "descriptor \(fd) is open write-only; it must be read-write")
        }
        self.fd = fd
        self.size = UInt64(max(0, st.st_size))
        self.isRegularFile = type == S_IFREG
    }

    /// A close-on-exec duplicate the caller owns: the VMM's descriptor stays its own,
    /// and no child of ours inherits it.
    func duplicate(what: String) throws(DeviceError) -> Int32 {
        let copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        guard copy >= 0 else { throw .systemCall("dup \(what)", path: nil, errno: .current) }
        return copy
    }

    static func kind(_ type: mode_t) -> String {
        switch type {
        case S_IFIFO: "a pipe"
        case S_IFSOCK: "a socket"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFDIR: "a directory"
        case S_IFLNK: "a symbolic link"
        default: "of file type \(type)"
        }
    }
}

/// Guest memory's extra rule: exactly `--memory-size` bytes (larger is refused
/// too: it means the VMM and the operator disagree on the guest).
struct MemoryDescriptor {
    let handed: HandedDescriptor
    var size: UInt64 { handed.size }

    init(fd: Int32, name: String, expectedSize: UInt64?) throws(DeviceError) {
        let what = "guest memory \(name)"
        handed = try HandedDescriptor(fd: fd, what: what)
        if let expectedSize, handed.size != expectedSize {
            throw .invalidArgument(operation: what, detail: "descriptor \(fd) has \(handed.size) bytes, --memory-size is \(expectedSize)")
        }
    }
}
