import Foundation
import Glibc
import Testing
import TestSupport

/// The systemd interfaces of `receive`, driven the way systemd drives them, by a test
/// that owns every socket: socket activation (LISTEN_FDS/LISTEN_PID, fd 3) and
/// sd_notify datagrams (NOTIFY_SOCKET).
@Suite(.serialized)
struct SystemdTests {
    typealias T = TwoProcessTests
    static let devices = ["--device", "gpu0=sim:state=512K,seed=1,dirty=16,churn=4K,chunk=64K"]

    @Test func socketActivationMigratesIntoThePassedSocket() throws {
        let dir = try T.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeGuestMemoryFile("\(dir)/src.mem", pages: 1024)
        let (listener, port) = try Self.listeningSocket()
        let receiver = try ActivatedChild(passing: listener, outputPrefix: "\(dir)/receive", arguments: [
            "receive", "--listen", "systemd", "--memory", "\(dir)/dst.mem", "--memory-size", "4M", "--create-memory",
            "--json", "--accept-timeout", "60"] + Self.devices + DevCertificates.arguments("destination", "source"))
        close(listener)  // the receiver holds it now, as systemd's would after handing it over
        let sender = try T.startSender(port: port, ["--memory", "\(dir)/src.mem", "--json"] + Self.devices)
        let s = sender.wait()
        let r = receiver.wait()
        #expect(s.code == 0, "sender: \(s.err)")
        #expect(r.code == 0, "receiver: \(r.err)")
        #expect(T.events(r.out).contains { $0["event"] as? String == "finished" })
        let src = FileManager.default.contents(atPath: "\(dir)/src.mem")
        #expect(src != nil && src == FileManager.default.contents(atPath: "\(dir)/dst.mem"), "guest memory differs")
    }

    @Test func socketMeantForAnotherProcessIsRefused() throws {
        let dir = try T.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (listener, _) = try Self.listeningSocket()
        let receiver = try ActivatedChild(passing: listener, listenPID: "1", outputPrefix: "\(dir)/receive", arguments: [
            "receive", "--listen", "systemd", "--accept-timeout", "5"] + Self.devices + DevCertificates.arguments("destination", "source"))
        close(listener)
        let r = receiver.wait()
        #expect(r.code == 1)
        #expect(r.err.contains("meant for process 1"), "\(r.err)")
    }

    @Test func sdNotifyReportsReadyThenEachPhase() throws {
        let dir = try T.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeGuestMemoryFile("\(dir)/src.mem", pages: 1024)
        let notify = try NotifySocket(path: "\(dir)/notify")
        let receiver = try T.start(["receive", "--listen", "127.0.0.1:0", "--memory", "\(dir)/dst.mem", "--memory-size", "4M",
                                    "--create-memory", "--json", "--accept-timeout", "60"] + Self.devices + DevCertificates.arguments("destination", "source"),
                                   environment: ["NOTIFY_SOCKET": notify.path])
        // READY=1 comes once the receiver listens, and names where: connect there.
        let ready = try #require(notify.receive(timeout: 60), "no READY=1: \(receiver.process.isRunning)")
        #expect(ready.hasPrefix("READY=1\nSTATUS=listening on 127.0.0.1:"), "\(ready)")
        let port = try #require(ready.split(separator: ":").last?.split(separator: ",").first.flatMap { UInt16($0) })
        let sender = try T.startSender(port: port, ["--memory", "\(dir)/src.mem", "--json"] + Self.devices)
        #expect(sender.wait().code == 0)
        #expect(receiver.wait().code == 0)
        var statuses: [String] = []
        while let message = notify.receive(timeout: 0.2) { statuses.append(message) }
        for expected in ["STATUS=connected to source.vfio-migrate.test", "STATUS=phase precopy", "STATUS=phase resume", "STATUS=migration complete"] {
            #expect(statuses.contains(expected), "\(expected) missing from \(statuses)")
        }
        #expect(!statuses.contains { $0.contains("READY=1") }, "READY=1 sent twice")
    }

    /// A TCP socket listening on 127.0.0.1 and its port.
    static func listeningSocket() throws -> (Int32, UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(fd >= 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && listen(fd, 8) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        try #require(ok)
        return (fd, UInt16(bigEndian: addr.sin_port))
    }
}

/// The receiver started as systemd starts a socket-activated service: the socket as
/// fd 3, LISTEN_FDS=1 and LISTEN_PID = the child's own pid. The pid is only known in the
/// child, so a shell sets it and then execs the binary (same pid).
struct ActivatedChild {
    let child: InheritingChild

    init(passing socket: Int32, listenPID: String? = nil, outputPrefix: String, arguments: [String]) throws {
        let pidSetting = listenPID.map { "LISTEN_PID=\($0)" } ?? "LISTEN_PID=$$"
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LISTEN_") && $0.key != "NOTIFY_SOCKET" }
        environment["LISTEN_FDS"] = "1"
        child = try InheritingChild("/bin/sh", ["-c", "\(pidSetting); export LISTEN_PID; exec \"$0\" \"$@\"", BuiltBinary.vfioMigrate] + arguments,
                                    inherit: [3: socket], environment: environment, outputPrefix: outputPrefix)
    }

    /// Exit code (or 128+signal; -1 when killed after `timeout` seconds) and both outputs.
    func wait(timeout: Double = 90) -> (code: Int32, out: String, err: String) {
        (child.wait(timeout: timeout), child.stdout, child.stderr)
    }
}

/// A datagram socket the test binds, as systemd's NOTIFY_SOCKET.
final class NotifySocket {
    let path: String
    private let fd: Int32

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(fd >= 0)
        var un = sockaddr_un()
        un.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &un.sun_path) { dst in for (i, b) in path.utf8.enumerated() { dst[i] = b } }
        let bound = withUnsafePointer(to: &un) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(bound == 0)
    }

    deinit { close(fd); unlink(path) }

    /// The next datagram, or nil if none arrives within `timeout` seconds.
    func receive(timeout: Double) -> String? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, Int32(timeout * 1000)) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n > 0 ? String(decoding: buffer.prefix(n), as: UTF8.self) : nil
    }
}
