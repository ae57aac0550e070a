import Glibc
import SystemPackage

// swift-system's `Errno` is this project's one errno type. Two things it does not
// offer are added here, once, for every module that reports a failed system call:
// reading errno (its `current` is internal) and the symbolic name (its
// `description` is strerror's text alone, while operators search logs and man
// pages for "ENOENT"). `package` keeps these additions out of the public API.

extension Errno {
    /// errno of the last failed libc call on this thread. Read it right after the
    /// call: any later libc call may overwrite it.
    package static var current: Errno { Errno(rawValue: Glibc.errno) }

    /// The C name, "ENOENT"; "errno N" for a value without one here.
    package var symbolicName: String { errnoNames[rawValue] ?? "errno \(rawValue)" }

    /// strerror's text and the C name, "No such file or directory (ENOENT)": what
    /// every error message of this project shows for an errno.
    package var explanation: String { "\(description) (\(symbolicName))" }
}

// The values Linux system calls report to this project (files, ioctls, mmap,
// sockets); others still print with their number. Outside the extension, where
// `EPERM` is Glibc's constant (inside it, swift-system's unavailable `Errno.EPERM`).
private let errnoNames: [CInt: String] = [
    EPERM: "EPERM", ENOENT: "ENOENT", ESRCH: "ESRCH", EINTR: "EINTR", EIO: "EIO",
    ENXIO: "ENXIO", E2BIG: "E2BIG", EBADF: "EBADF", EAGAIN: "EAGAIN", ENOMEM: "ENOMEM",
    EACCES: "EACCES", EFAULT: "EFAULT", EBUSY: "EBUSY", EEXIST: "EEXIST", EXDEV: "EXDEV",
    ENODEV: "ENODEV", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR", EINVAL: "EINVAL",
    ENFILE: "ENFILE", EMFILE: "EMFILE", ENOTTY: "ENOTTY", ETXTBSY: "ETXTBSY",
    EFBIG: "EFBIG", ENOSPC: "ENOSPC", ESPIPE: "ESPIPE", EROFS: "EROFS", EPIPE: "EPIPE",
    ERANGE: "ERANGE", EDEADLK: "EDEADLK", ENAMETOOLONG: "ENAMETOOLONG", ENOSYS: "ENOSYS",
    ENOTEMPTY: "ENOTEMPTY", ELOOP: "ELOOP", ENOMSG: "ENOMSG", EPROTO: "EPROTO",
    EOVERFLOW: "EOVERFLOW", ENOTSOCK: "ENOTSOCK", EDESTADDRREQ: "EDESTADDRREQ",
    EMSGSIZE: "EMSGSIZE", EPROTONOSUPPORT: "EPROTONOSUPPORT", EOPNOTSUPP: "EOPNOTSUPP",
    EAFNOSUPPORT: "EAFNOSUPPORT", EADDRINUSE: "EADDRINUSE", EADDRNOTAVAIL: "EADDRNOTAVAIL",
    ENETDOWN: "ENETDOWN", ENETUNREACH: "ENETUNREACH", ECONNABORTED: "ECONNABORTED",
    ECONNRESET: "ECONNRESET", ENOBUFS: "ENOBUFS", EISCONN: "EISCONN", ENOTCONN: "ENOTCONN",
    ETIMEDOUT: "ETIMEDOUT", ECONNREFUSED: "ECONNREFUSED", EHOSTUNREACH: "EHOSTUNREACH",
    EALREADY: "EALREADY", EINPROGRESS: "EINPROGRESS",
]
