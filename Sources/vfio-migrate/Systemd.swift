import Foundation
import MigrationEngine
import MigrationTLS

// The two systemd protocols `receive` speaks, each a few lines of plain socket code
// (sd_listen_fds(3), sd_notify(3)), so the binary needs no libsystemd.

/// Socket activation: the service manager binds and listens, then starts us with the
/// socket as fd 3, `LISTEN_FDS=1` and `LISTEN_PID` = our pid.
enum SystemdActivation {
    /// sd_listen_fds(3): passed descriptors start here.
    static let firstDescriptor: Int32 = 3

    enum Failure: Error, Equatable, CustomStringConvertible {
        case notActivated
        case otherProcess(listenPID: String, ourPID: Int32)
        case badCount(String)

        var description: String {
            switch self {
            case .notActivated:
                return "--listen systemd: no socket was passed (LISTEN_FDS and LISTEN_PID are not set); start the service through its socket unit (vfio-migrate-receive@NAME.socket) or give --listen HOST:PORT"
            case let .otherProcess(listenPID, ourPID):
                return "--listen systemd: the passed socket is meant for process \(listenPID), not this one (\(ourPID)); was LISTEN_PID inherited through another program?"
            case let .badCount(count):
                return "--listen systemd: LISTEN_FDS=\(count), expected exactly 1 socket; give the socket unit one ListenStream="
            }
        }
    }

    /// The one passed listening descriptor. The variables are removed either way, so
    /// nothing this process starts mistakes the socket for its own.
    static func listeningDescriptor(environment: [String: String] = ProcessInfo.processInfo.environment,
                                    pid: Int32 = getpid()) throws(Failure) -> Int32 {
        defer { for name in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] { unsetenv(name) } }
        guard let fds = environment["LISTEN_FDS"], let listenPID = environment["LISTEN_PID"] else { throw .notActivated }
        guard Int32(listenPID) == pid else { throw .otherProcess(listenPID: listenPID, ourPID: pid) }
        guard Int(fds) == 1 else { throw .badCount(fds) }
        return firstDescriptor
    }
}

/// sd_notify(3): `READY=1` once listening, `STATUS=` as the session moves on, sent as
/// datagrams to `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
/// Best effort: a lost status message must never fail a migration.
final class SystemdNotifier: Sendable {
    private let address: [UInt8]

    /// nil when not run under a service manager that wants notifications.
    init?(environment: [String: String] = ProcessInfo.processInfo.environment) {
        guard let path = environment["NOTIFY_SOCKET"], path.hasPrefix("/") || path.hasPrefix("@"),
              path.utf8.count <= 107 else { return nil }
        // Abstract namespace: the leading '@' stands for a NUL byte.
        address = path.hasPrefix("@") ? [0] + Array(path.utf8.dropFirst()) : Array(path.utf8)
    }

    func ready(listeningOn endpoint: Endpoint) {
        send("READY=1\nSTATUS=listening on \(endpoint), waiting for a source")
    }

    func status(_ text: String) {
        send("STATUS=" + text.replacingOccurrences(of: "\n", with: " "))
    }

    /// The events worth a status line; progress is left to the journal.
    func report(_ event: MigrationEvent) {
        switch event {
        case .connected(let peer): status("connected to \(peer)")
        case .helloAccepted(let devices, _, _, _, _, _): status("HELLO accepted: \(devices.joined(separator: ", "))")
        case .phase(let phase): status("phase \(phase)")
        case .sessionRefused(let why): status("refused a peer: \(why)")
        case .connectionLost(let why): status("connection lost, session kept: \(why)")
        case .resumed(let r, _): status("session resumed from frame \(r)")
        case .finished: status("migration complete")
        case .progress, .iterationEnd, .switchover, .deviceEnd, .reconnecting: break
        }
    }

    func send(_ message: String) {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var un = sockaddr_un()
        un.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &un.sun_path) { dst in
            for (i, byte) in address.enumerated() { dst[i] = byte }
        }
        // The abstract namespace counts the name's exact length, not up to a NUL.
        let length = socklen_t(MemoryLayout<sa_family_t>.size + address.count)
        let bytes = Array(message.utf8)
        _ = withUnsafePointer(to: &un) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), sa, length) }
            }
        }
    }
}
