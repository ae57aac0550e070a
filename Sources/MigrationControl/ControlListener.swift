import Glibc

/// The socket controllers reach the server through: a UNIX path this process
/// binds (and removes again), or an inherited descriptor. An inherited socket
/// that is already connected is the one controller there will ever be.
final class ControlListener {
    enum Opened {
        case listening(ControlListener)
        case connected(Int32)
    }

    let fd: Int32
    /// The path and the inode bound there, so `close` removes our socket only,
    /// never one another process put at the same path since.
    private let boundPath: (path: String, device: UInt64, inode: UInt64)?

    private init(fd: Int32, boundPath: (path: String, device: UInt64, inode: UInt64)?) {
        self.fd = fd
        self.boundPath = boundPath
    }

    static func open(_ address: ControlAddress) throws(ControlError) -> Opened {
        switch address {
        case .unix(let path): return .listening(try bind(path))
        case .descriptor(let fd): return try adopt(fd)
        }
    }

    /// Non-blocking accept: nil when the connection went away meanwhile.
    func accept() -> Int32? {
        let conn = Glibc.accept(fd, nil, nil)
        guard conn >= 0 else { return nil }
        _ = fcntl(conn, F_SETFD, FD_CLOEXEC)
        return conn
    }

    func close() {
        _ = Glibc.close(fd)
        guard let bound = boundPath, let now = Self.identity(of: bound.path),
              now.isSocket, now.device == bound.device, now.inode == bound.inode else { return }
        unlink(bound.path)
    }

    // MARK: unix:PATH

    private static func bind(_ path: String) throws(ControlError) -> ControlListener {
        try removeStaleSocket(at: path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw .systemCall(operation: "socket", errno: errno) }
        // The socket file is born with mode 0600: a chmod after bind would leave a
        // window in which another uid could connect. umask is process-wide, so it
        // is narrowed for the bind call only.
        let previous = umask(0o177)
        let rc = withUnixAddress(path) { Glibc.bind(fd, $0, $1) }
        let bindErrno = errno
        umask(previous)
        guard rc == 0, listen(fd, 4) == 0 else {
            let err = rc == 0 ? errno : bindErrno
            _ = Glibc.close(fd)
            if err == EADDRINUSE { throw .socketInUse(path: path) }
            throw .systemCall(operation: "bind \(path)", errno: err)
        }
        let bound = identity(of: path)
        return ControlListener(fd: fd, boundPath: bound.map { (path, $0.device, $0.inode) })
    }

    /// A socket left by a dead process is replaced; a live one or any other kind
    /// of file is refused (never delete what is not ours to delete).
    private static func removeStaleSocket(at path: String) throws(ControlError) {
        guard let existing = identity(of: path) else { return }
        guard existing.isSocket else { throw .pathIsNotASocket(path: path) }
        let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard probe >= 0 else { throw .systemCall(operation: "socket", errno: errno) }
        defer { _ = Glibc.close(probe) }
        if withUnixAddress(path, { Glibc.connect(probe, $0, $1) }) == 0 { throw .socketInUse(path: path) }
        if errno == ECONNREFUSED { unlink(path) }
    }

    private static func identity(of path: String) -> (isSocket: Bool, device: UInt64, inode: UInt64)? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        return (st.st_mode & S_IFMT == S_IFSOCK, UInt64(st.st_dev), UInt64(st.st_ino))
    }

    private static func withUnixAddress<R>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { dst in
            for (i, byte) in path.utf8.prefix(dst.count - 1).enumerated() { dst[i] = byte }
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    // MARK: fd:N

    /// Ownership passes at the call: on a refusal the descriptor is closed.
    private static func adopt(_ fd: Int32) throws(ControlError) -> Opened {
        do throws(ControlError) {
            guard try option(SO_DOMAIN, of: fd) == AF_UNIX else { throw ControlError.notAUnixStreamSocket(descriptor: fd, reason: "not a UNIX socket") }
            guard try option(SO_TYPE, of: fd) == Int32(SOCK_STREAM.rawValue) else {
                throw ControlError.notAUnixStreamSocket(descriptor: fd, reason: "not a stream socket")
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            if try option(SO_ACCEPTCONN, of: fd) != 0 {
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                return .listening(ControlListener(fd: fd, boundPath: nil))
            }
            var address = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let connected = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) }
            } == 0
            guard connected else { throw ControlError.notAUnixStreamSocket(descriptor: fd, reason: "neither listening nor connected") }
            return .connected(fd)
        } catch {
            _ = Glibc.close(fd)
            throw error
        }
    }

    private static func option(_ name: Int32, of fd: Int32) throws(ControlError) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, name, &value, &length) == 0 else {
            let err = errno
            let why = err == ENOTSOCK ? "not a socket" : err == EBADF ? "not an open descriptor" : String(cString: strerror(err))
            throw .notAUnixStreamSocket(descriptor: fd, reason: why)
        }
        return value
    }
}
