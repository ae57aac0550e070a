import Glibc
import SyncPrimitives
import SystemErrno
import SystemPackage

/// Monotonic seconds, for deadlines that wall-clock changes cannot stretch.
func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func setNonBlockingCloseOnExec(_ fd: Int32) -> Bool {
    let flags = fcntl(fd, F_GETFL)
    return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 && fcntl(fd, F_SETFD, FD_CLOEXEC) == 0
}

enum WaitOutcome { case ready, timedOut, woken }

/// One non-blocking socket fd plus a self-pipe that `close()` signals, so a thread
/// blocked in `poll` on this socket wakes up at once. The fd is released only when
/// no operation is in flight (`enter`/`leave`), so a concurrent `close()` can never
/// make another thread use a closed — or reused — descriptor number.
final class Socket: Sendable {
    let fd: Int32
    let isTCP: Bool
    /// Self-pipe: `close()` writes a byte, every `poll` watches the read end (never drained,
    /// so it stays readable and later waits return at once too).
    private let wakeFD: Int32
    private let wakeWriteFD: Int32
    private struct State { var closed = false, inflight = 0, released = false }
    private let state = LockedValue(State())

    /// Takes ownership of `fd`: on failure it is closed too.
    init(fd: Int32, isTCP: Bool, configure: (Int32) -> Bool = setNonBlockingCloseOnExec) throws(TLSError) {
        let pipeFDs: (read: Int32, write: Int32)
        do { pipeFDs = try Self.makeWakePipe(configure: configure) } catch {
            Glibc.close(fd)
            throw error
        }
        self.fd = fd
        self.isTCP = isTCP
        self.wakeFD = pipeFDs.read
        self.wakeWriteFD = pipeFDs.write
    }

    /// A non-blocking, close-on-exec pipe; both ends closed again if configuring one fails.
    /// (pipe(2) plus fcntl, and accept(2) plus fcntl: pipe2/accept4 are _GNU_SOURCE,
    /// which Swift's Glibc module does not expose.)
    static func makeWakePipe(configure: (Int32) -> Bool) throws(TLSError) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw .socketError(operation: "pipe", errno: .current) }
        for end in fds where !configure(end) {
            let err = Errno.current  // before close() can overwrite it
            Glibc.close(fds[0])
            Glibc.close(fds[1])
            throw .socketError(operation: "fcntl", errno: err)
        }
        return (fds[0], fds[1])
    }

    deinit {
        let mustRelease = state.withLock { s in
            defer { s.released = true }
            return !s.released
        }
        if mustRelease { releaseDescriptors() }
    }

    /// Marks an operation in flight; throws `.closed` once `close()` has been called.
    func enter() throws(TLSError) {
        let ok = state.withLock { s in
            if s.closed { return false }
            s.inflight += 1
            return true
        }
        if !ok { throw .closed }
    }

    func leave() {
        let release = state.withLock { s in
            s.inflight -= 1
            guard s.closed, s.inflight == 0, !s.released else { return false }
            s.released = true
            return true
        }
        if release { releaseDescriptors() }
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    /// Idempotent. Sends FIN now and wakes every waiter; the descriptors go when the last
    /// in-flight operation leaves.
    func close() {
        let release: Bool? = state.withLock { s in
            if s.closed { return nil }
            s.closed = true
            // Inside the lock: a concurrent last `leave()` cannot release the fds under us.
            var one: UInt8 = 1
            _ = Glibc.write(wakeWriteFD, &one, 1)
            _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
            if s.inflight == 0 { s.released = true; return true }
            return false
        }
        if release == true { releaseDescriptors() }
    }

    private func releaseDescriptors() {
        Glibc.close(fd)
        Glibc.close(wakeFD)
        Glibc.close(wakeWriteFD)
    }

    /// Waits until the socket is ready for `events`, the deadline passes, or `close()`
    /// is called on this socket (or on `other`, e.g. the listener during a handshake).
    func wait(for events: Int16, until deadline: Double?, alsoWatching other: Socket? = nil) throws(TLSError) -> WaitOutcome {
        var fds = [pollfd(fd: fd, events: events, revents: 0), pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
        if let other { fds.append(pollfd(fd: other.wakeFD, events: Int16(POLLIN), revents: 0)) }
        while true {
            var timeoutMS: Int32 = -1
            if let deadline {
                let left = deadline - monotonicNow()
                if left <= 0 { return .timedOut }
                timeoutMS = Int32(min((left * 1000).rounded(.up), Double(Int32.max)))
            }
            let r = poll(&fds, nfds_t(fds.count), timeoutMS)
            if r < 0 {
                let err = Errno.current
                if err == .interrupted { continue }
                throw .socketError(operation: "poll", errno: err)
            }
            if fds.dropFirst().contains(where: { $0.revents != 0 }) { return .woken }
            if r > 0 { return .ready }  // readiness, or POLLERR/POLLHUP: the next call reports it
        }
    }

    // MARK: Plain byte I/O (graceful close after a failed handshake; tests)

    /// Non-blocking send; returns bytes written (0 if the socket buffer is full).
    func rawWrite(_ bytes: [UInt8]) throws(TLSError) -> Int {
        let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n < 0 {
            let err = Errno.current
            if err == .resourceTemporarilyUnavailable || err == .wouldBlock { return 0 }
            throw err == .brokenPipe || err == .connectionReset ? .connectionReset : .socketError(operation: "send", errno: err)
        }
        return n
    }

    /// Non-blocking recv; nil when nothing is available, [] at EOF.
    func rawRead(maxCount: Int) throws(TLSError) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: maxCount)
        let n = buffer.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 0 {
            let err = Errno.current
            if err == .resourceTemporarilyUnavailable || err == .wouldBlock { return nil }
            throw err == .connectionReset ? .connectionReset : .socketError(operation: "recv", errno: err)
        }
        return Array(buffer.prefix(n))
    }

    /// After a failed handshake: stop sending (our alert is already queued), then
    /// drain what the peer still sends until it closes or `lingerSeconds` pass.
    /// Closing with unread input would make the kernel send a RST, which can destroy
    /// the alert before the peer reads it — and the alert is the peer's only clue.
    func closeGracefully(lingerSeconds: Double) {
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
        let deadline = monotonicNow() + lingerSeconds
        drain: while true {
            do {
                switch try rawRead(maxCount: 16384) {
                case .some(let bytes) where bytes.isEmpty: break drain
                case .some: continue
                case .none:
                    if try wait(for: Int16(POLLIN), until: deadline) != .ready { break drain }
                }
            } catch { break drain }
        }
        close()
    }

    // MARK: Connecting and listening

    static func connect(to endpoint: Endpoint, timeoutSeconds: Double) throws(TLSError) -> Socket {
        try connect(to: SocketAddress.resolve(endpoint, passive: false), endpoint: endpoint, timeoutSeconds: timeoutSeconds)
    }

    /// Tries every resolved address in order (a host with IPv6 and IPv4 addresses, one
    /// of which may be down): the first that accepts wins. Each attempt may use its
    /// share of the time left, so an unreachable first address cannot eat it all.
    static func connect(to addresses: [SocketAddress], endpoint: Endpoint, timeoutSeconds: Double) throws(TLSError) -> Socket {
        let deadline = monotonicNow() + timeoutSeconds
        var lastError = Errno.connectionRefused
        var timedOut = false
        for (i, address) in addresses.enumerated() {
            let left = deadline - monotonicNow()
            if left <= 0 { break }
            let share = monotonicNow() + left / Double(addresses.count - i)
            switch try attempt(address, until: share) {
            case .connected(let socket): return socket
            case .failed(let err): lastError = err
            case .timedOut: timedOut = true
            }
        }
        if timedOut || monotonicNow() >= deadline { throw .connectTimeout(endpoint: endpoint, seconds: timeoutSeconds) }
        throw .connectFailed(endpoint: endpoint, errno: lastError)
    }

    private enum Attempt { case connected(Socket), failed(Errno), timedOut }

    /// One non-blocking connect. Address-specific failures (including an address family
    /// this host lacks) are returned so the caller tries the next address.
    private static func attempt(_ address: SocketAddress, until deadline: Double) throws(TLSError) -> Attempt {
        let fd = Glibc.socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failed(.current) }
        let socket = try Socket(fd: fd, isTCP: address.family != AF_UNIX)
        let rc = address.withSockaddr { Glibc.connect(fd, $0, $1) }
        // A C int, not an Errno yet: SO_ERROR hands the connect's outcome back as one.
        var err: Int32 = rc == 0 ? 0 : Errno.current.rawValue
        if err == Errno.nowInProgress.rawValue {
            switch try socket.wait(for: Int16(POLLOUT), until: deadline) {
            case .ready:
                var len = socklen_t(MemoryLayout<Int32>.size)
                if getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 { err = Errno.current.rawValue }
            case .timedOut:
                socket.close()
                return .timedOut
            case .woken:
                socket.close()
                throw .closed
            }
        }
        guard err == 0 else {
            socket.close()
            return .failed(Errno(rawValue: err))
        }
        if socket.isTCP { socket.setNoDelay() }
        return .connected(socket)
    }

    /// TLS records are written whole; Nagle would only delay the last one of a frame.
    func setNoDelay() {
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    static func listen(on endpoint: Endpoint) throws(TLSError) -> Socket {
        let addresses = try SocketAddress.resolve(endpoint, passive: true)
        guard let address = addresses.first else { throw .listenFailed(endpoint: endpoint, errno: .addressNotAvailable) }
        if case let .unix(path) = endpoint { try removeStaleUnixSocket(path, endpoint: endpoint) }
        let fd = Glibc.socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .socketError(operation: "socket", errno: .current) }
        let socket = try Socket(fd: fd, isTCP: address.family != AF_UNIX)
        if socket.isTCP {
            var one: Int32 = 1
            _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        guard address.withSockaddr({ Glibc.bind(fd, $0, $1) }) == 0, Glibc.listen(fd, 64) == 0 else {
            let err = Errno.current  // before close() can overwrite it
            socket.close()
            throw .listenFailed(endpoint: endpoint, errno: err)
        }
        return socket
    }

    /// A socket file left by a dead listener makes bind fail with EADDRINUSE; remove it
    /// only if nobody accepts on it (connect refused), never a live one or a non-socket.
    private static func removeStaleUnixSocket(_ path: String, endpoint: Endpoint) throws(TLSError) {
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFSOCK else { return }
        let probe = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard probe >= 0 else { return }
        defer { Glibc.close(probe) }
        let address = SocketAddress(unixPath: path)
        if address.withSockaddr({ Glibc.connect(probe, $0, $1) }) == 0 {
            throw .listenFailed(endpoint: endpoint, errno: .addressInUse)
        }
        if Errno.current == .connectionRefused { unlink(path) }
    }

    /// One pending connection, or nil if none is queued right now.
    func acceptConnection() throws(TLSError) -> Socket? {
        let conn = Glibc.accept(fd, nil, nil)
        if conn < 0 {
            let err = Errno.current
            switch err {
            case .resourceTemporarilyUnavailable, .wouldBlock, .interrupted, .connectionAbort, .protocolError: return nil
            default: throw .socketError(operation: "accept", errno: err)
            }
        }
        if !setNonBlockingCloseOnExec(conn) {
            let err = Errno.current  // before close() can overwrite it
            Glibc.close(conn)
            throw .socketError(operation: "fcntl", errno: err)
        }
        let socket = try Socket(fd: conn, isTCP: isTCP)
        if isTCP { socket.setNoDelay() }
        return socket
    }

    /// The numeric address and port actually bound (TCP only).
    func localTCPEndpoint() throws(TLSError) -> Endpoint {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        guard rc == 0 else { throw .socketError(operation: "getsockname", errno: .current) }
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        var serv = [CChar](repeating: 0, count: Int(NI_MAXSERV))
        let gai = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                getnameinfo($0, len, &host, socklen_t(host.count), &serv, socklen_t(serv.count), NI_NUMERICHOST | NI_NUMERICSERV)
            }
        }
        guard gai == 0 else { throw .socketError(operation: "getnameinfo", errno: .invalidArgument) }
        let hostText = String(decoding: host.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let servText = String(decoding: serv.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return .tcp(host: hostText, port: UInt16(servText) ?? 0)
    }
}

/// A resolved socket address (the sockaddr bytes and their length).
struct SocketAddress {
    var storage = sockaddr_storage()
    var length: socklen_t = 0
    var family: Int32 { Int32(storage.ss_family) }

    init(unixPath path: String) {
        var un = sockaddr_un()
        un.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &un.sun_path) { dst in
            for (i, byte) in path.utf8.prefix(dst.count - 1).enumerated() { dst[i] = byte }
        }
        withUnsafeMutableBytes(of: &storage) { dst in
            withUnsafeBytes(of: un) { dst.copyMemory(from: $0) }
        }
        length = socklen_t(MemoryLayout<sockaddr_un>.size)
    }

    private init(raw: UnsafePointer<sockaddr>, length: socklen_t) {
        withUnsafeMutableBytes(of: &storage) { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(start: raw, count: Int(length)))
        }
        self.length = length
    }

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafePointer(to: storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) }
        }
    }

    static func resolve(_ endpoint: Endpoint, passive: Bool) throws(TLSError) -> [SocketAddress] {
        switch endpoint {
        case let .unix(path):
            return [SocketAddress(unixPath: path)]
        case let .tcp(host, port):
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)
            var list: UnsafeMutablePointer<addrinfo>?
            // "*" means every local address (passive lookup with no host).
            let node: String? = (passive && host == "*") ? nil : host
            let rc = getaddrinfo(node, String(port), &hints, &list)
            guard rc == 0 else {
                throw .resolveFailed(host: host, detail: String(cString: gai_strerror(rc)))
            }
            defer { freeaddrinfo(list) }
            var result: [SocketAddress] = []
            var cursor = list
            while let info = cursor {
                if let addr = info.pointee.ai_addr { result.append(SocketAddress(raw: addr, length: info.pointee.ai_addrlen)) }
                cursor = info.pointee.ai_next
            }
            return result
        }
    }
}
