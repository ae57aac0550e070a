import Glibc
import SystemErrno
import SystemPackage

/// A guest-memory descriptor a VMM handed over (`--memory fd:N`), checked before
/// anything starts: mapping a descriptor that is not what it claims would either
/// fail halfway (a pipe, a closed slot) or, worse, migrate the wrong bytes (a
/// file of another size) or fault on the first page written (a read-only one).
/// Every refusal names the descriptor as the operator wrote it.
struct MemoryDescriptor {
    let fd: Int32
    let name: String
    let size: UInt64

    /// `expectedSize`: `--memory-size`, when given; the file must be exactly that
    /// (larger is refused too: it means the VMM and the operator disagree on the guest).
    init(fd: Int32, name: String, expectedSize: UInt64?) throws(DeviceError) {
        let what = "guest memory \(name)"
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0 else {
            throw .invalidArgument(operation: what, detail: "descriptor \(fd) is not open (\(Errno.current.explanation))")
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw .invalidArgument(operation: what, detail: "fstat descriptor \(fd): \(Errno.current.explanation)")
        }
        let type = st.st_mode & S_IFMT
        guard type == S_IFREG else {
            throw .invalidArgument(operation: what, detail: "descriptor \(fd) is \(Self.kind(type)), not a memfd, hugetlbfs or shared file")
        }
        // The kind before the access mode: a pipe's read end is "read-only" too, but
        // "a pipe" is what the operator needs to hear.
        switch flags & O_ACCMODE {
        case O_RDWR: break
        case O_RDONLY: throw .invalidArgument(operation: what, detail: "descriptor \(fd) is open read-only; MAP_SHARED guest memory must be read-write")
        default: throw .invalidArgument(operation: what, detail: "descriptor \(fd) is open write-only; guest memory must be read-write")
        }
        let actual = UInt64(max(0, st.st_size))
        if let expectedSize, actual != expectedSize {
            throw .invalidArgument(operation: what, detail: "descriptor \(fd) has \(actual) bytes, --memory-size is \(expectedSize)")
        }
        self.fd = fd; self.name = name; self.size = actual
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
