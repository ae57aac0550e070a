import Glibc
import Testing
import TestSupport
@testable import MigrationTLS

/// Connecting tries every resolved address; no descriptor leaks on the
/// error paths of socket set-up.
@Suite struct SocketEdges {
    /// A TCP port on 127.0.0.1 that refuses connections (bound, never listening).
    static func refusingPort() throws -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard bound else { throw SetupError("bind: errno \(errno)") }
        return (fd, UInt16(bigEndian: addr.sin_port))
    }

    @Test func connectTriesTheNextAddressWhenOneFails() throws {
        let listener = try Socket.listen(on: .tcp(host: "127.0.0.1", port: 0))
        defer { listener.close() }
        guard case .tcp(_, let port) = try listener.localTCPEndpoint() else { return }
        let refusing = try Self.refusingPort()
        defer { close(refusing.fd) }
        // As a host with an IPv6 and an IPv4 address resolves: the first ones fail
        // (no IPv6 listener / refused), the last one accepts.
        let addresses = try SocketAddress.resolve(.tcp(host: "::1", port: refusing.port), passive: false)
            + SocketAddress.resolve(.tcp(host: "127.0.0.1", port: refusing.port), passive: false)
            + SocketAddress.resolve(.tcp(host: "127.0.0.1", port: port), passive: false)
        let endpoint = Endpoint.tcp(host: "dual-stack.test", port: port)
        let socket = try Socket.connect(to: addresses, endpoint: endpoint, timeoutSeconds: 10)
        socket.close()

        // When every address fails, the error is the connect failure, not a timeout.
        #expect {
            try Socket.connect(to: Array(addresses.dropLast()), endpoint: endpoint, timeoutSeconds: 10)
        } throws: { error in
            if case .connectFailed = error as? TLSError { return true } else { return false }
        }
    }

    /// `fcntl` failing on the wake pipe closes both pipe ends and the socket it was for.
    /// Other suites run in parallel and may reuse a closed descriptor's number at once,
    /// so each descriptor is identified by its inode, not by its number.
    @Test func failedWakePipeSetUpLeaksNoDescriptor() throws {
        func identity(_ fd: Int32) -> [UInt64]? {
            var st = stat()
            return fstat(fd, &st) == 0 ? [UInt64(st.st_dev), UInt64(st.st_ino)] : nil
        }
        var seen: [(fd: Int32, identity: [UInt64]?)] = []
        let victim = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        let victimIdentity = identity(victim)
        #expect(throws: TLSError.self) {
            _ = try Socket(fd: victim, isTCP: true, configure: { fd in seen.append((fd, identity(fd))); return seen.count < 2 })
        }
        #expect(seen.count == 2)
        for (fd, before) in seen + [(victim, victimIdentity)] {
            #expect(before != nil)
            #expect(identity(fd) != before, "descriptor \(fd) is still open")
        }
    }
}
