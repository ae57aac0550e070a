import Glibc
import SystemErrno
import SystemPackage

// Socket activation: a service manager (systemd) binds and listens, then hands the
// socket over as a descriptor. The same rules apply as to a socket this side opens.

extension TLSListener {
    /// Adopts `descriptor`, which must be a listening SOCK_STREAM socket (TCP or UNIX),
    /// e.g. fd 3 from systemd's LISTEN_FDS. Ownership passes at the call: on any
    /// failure the descriptor is closed. The development certificates are refused
    /// unless the socket's local address is loopback or UNIX, as for `init(endpoint:context:)`.
    public convenience init(inheritedDescriptor descriptor: Int32, context: TLSContext) throws(TLSError) {
        guard context.role == .server else {
            Glibc.close(descriptor)
            throw TLSError.invalidConfiguration("a listener needs a server-role TLSContext")
        }
        let endpoint: Endpoint
        do throws(TLSError) {
            try Socket.checkListening(descriptor)
            endpoint = try Socket.localEndpoint(of: descriptor)
            try context.checkEndpoint(endpoint)
            // accept() must not block: a timed accept polls, then takes what is there
            // (a service manager's socket usually comes blocking).
            guard setNonBlockingCloseOnExec(descriptor) else {
                throw TLSError.socketError(operation: "fcntl", errno: .current)
            }
        } catch {
            Glibc.close(descriptor)
            throw error
        }
        let socket = try Socket(fd: descriptor, isTCP: endpoint.isTCP)
        self.init(socket: socket, context: context, boundEndpoint: endpoint)
    }
}

extension Endpoint {
    var isTCP: Bool { if case .tcp = self { return true } else { return false } }
}

extension Socket {
    /// Refuses anything but a listening stream socket, naming what it is instead.
    static func checkListening(_ fd: Int32) throws(TLSError) {
        func option(_ name: Int32) throws(TLSError) -> Int32 {
            var value: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, SOL_SOCKET, name, &value, &len) == 0 else {
                let err = Errno.current
                let why = err == .notSocket ? "not a socket" : err == .badFileDescriptor ? "not an open descriptor" : err.explanation
                throw .notAListeningSocket(descriptor: fd, reason: why)
            }
            return value
        }
        let type = try option(SO_TYPE)
        guard type == Int32(SOCK_STREAM.rawValue) else {
            let kind = type == Int32(SOCK_DGRAM.rawValue) ? "a datagram socket" : "a socket of type \(type)"
            throw .notAListeningSocket(descriptor: fd, reason: "\(kind), not a stream socket")
        }
        guard try option(SO_ACCEPTCONN) != 0 else {
            throw .notAListeningSocket(descriptor: fd, reason: "a stream socket that is not listening (listen() was not called)")
        }
    }

    /// The local address of a bound socket: numeric TCP (IPv4/IPv6) or a UNIX path
    /// (`@NAME` for the abstract namespace, which is as local as a path).
    static func localEndpoint(of fd: Int32) throws(TLSError) -> Endpoint {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        guard rc == 0 else { throw .socketError(operation: "getsockname", errno: .current) }
        switch Int32(storage.ss_family) {
        case AF_INET, AF_INET6:
            return try numericEndpoint(storage, length: len)
        case AF_UNIX:
            return .unix(path: unixPath(storage, length: len))
        default:
            throw .notAListeningSocket(descriptor: fd, reason: "address family \(storage.ss_family) is neither TCP nor UNIX")
        }
    }

    private static func numericEndpoint(_ storage: sockaddr_storage, length: socklen_t) throws(TLSError) -> Endpoint {
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        var serv = [CChar](repeating: 0, count: Int(NI_MAXSERV))
        let gai = withUnsafePointer(to: storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                getnameinfo($0, length, &host, socklen_t(host.count), &serv, socklen_t(serv.count), NI_NUMERICHOST | NI_NUMERICSERV)
            }
        }
        guard gai == 0 else { throw .socketError(operation: "getnameinfo", errno: .invalidArgument) }
        let text = { (chars: [CChar]) in String(decoding: chars.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        return .tcp(host: text(host), port: UInt16(text(serv)) ?? 0)
    }

    private static func unixPath(_ storage: sockaddr_storage, length: socklen_t) -> String {
        let pathOffset = MemoryLayout<sa_family_t>.size
        let bytes = withUnsafeBytes(of: storage) { Array($0[pathOffset..<max(pathOffset, min(Int(length), $0.count))]) }
        guard let first = bytes.first else { return "" }  // unnamed
        if first == 0 { return "@" + String(decoding: bytes.dropFirst(), as: UTF8.self) }
        return String(decoding: bytes.prefix(while: { $0 != 0 }), as: UTF8.self)
    }
}
