import Glibc
import SystemErrno
import SystemPackage

/// Thin wrapper over the BSD socket calls for the plain-TCP baseline (the
/// project's Socket type is internal to MigrationTLS). Blocking, IPv4 loopback only.
enum PlainTCP {
    static func fail(_ call: String) -> BenchError { .socket(call: call, errno: .current) }

    private static func loopback(port: UInt16) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return a
    }

    static func listenLoopback() throws(BenchError) -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw fail("socket") }
        var addr = loopback(port: 0)
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(fd, 1) == 0 else { Glibc.close(fd); throw fail("bind/listen 127.0.0.1:0") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        guard named == 0 else { Glibc.close(fd); throw fail("getsockname") }
        return (fd, UInt16(bigEndian: addr.sin_port))
    }

    /// A port nothing listens on right now (bound, then released): for a
    /// listener that cannot report the port it got, such as QEMU's migrate-incoming.
    static func unusedLoopbackPort() throws(BenchError) -> UInt16 {
        let (fd, port) = try listenLoopback()
        Glibc.close(fd)
        return port
    }

    static func accept(_ listener: Int32) throws -> Int32 {
        while true {
            let fd = Glibc.accept(listener, nil, nil)
            if fd >= 0 { return fd }
            if Errno.current != .interrupted { throw fail("accept") }
        }
    }

    static func connectLoopback(port: UInt16) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw fail("socket") }
        var addr = loopback(port: port)
        let r = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard r == 0 else { Glibc.close(fd); throw fail("connect 127.0.0.1:\(port)") }
        return fd
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { buf in
            var off = 0
            while off < buf.count {
                let n = Glibc.write(fd, buf.baseAddress! + off, buf.count - off)
                if n < 0 { if Errno.current == .interrupted { continue }; throw fail("write") }
                off += n
            }
        }
    }

    /// Bytes read into the front of `buffer`; 0 at EOF.
    static func read(_ fd: Int32, into buffer: inout [UInt8]) throws -> Int {
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n >= 0 { return n }
            if Errno.current != .interrupted { throw fail("read") }
        }
    }
}
