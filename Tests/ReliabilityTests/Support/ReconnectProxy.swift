import Foundation
import Glibc
import SyncPrimitives

/// A TCP proxy for session resumption: it forwards every connection it accepts
/// (a source reconnects through it), cuts all live ones on demand or after a number
/// of raw bytes toward the receiver on the first, and can refuse new ones for a
/// while (a link that stays down).
final class ReconnectProxy: Sendable {
    let port: UInt16
    private let listenFD: Int32
    private let targetPort: UInt16
    private struct State {
        var live: [Int32] = []
        /// The descriptors of each connection, by its number (1: the first accepted).
        var pairs: [Int: [Int32]] = [:]
        var connections = 0
        var cuts = 0
        var refusing = false
        var closed = false
        var upBytesFirst = 0
        /// Raw bytes toward the receiver still to forward before an armed cut.
        var armedCut: Int?
        /// Every descriptor it opened, closed when the proxy goes (its pump threads hold it).
        var opened: [Int32] = []
        /// Runs for each new connection before it is forwarded (`onAccept`).
        var acceptHook: (@Sendable (Int) -> Void)?
    }
    private let state = ConditionValue(State())
    /// Cut everything once this many raw bytes went toward the receiver on the first connection.
    private let cutFirstAfterRawBytes: Int?

    init(targetPort: UInt16, cutFirstAfterRawBytes: Int? = nil) throws {
        self.targetPort = targetPort
        self.cutFirstAfterRawBytes = cutFirstAfterRawBytes
        (listenFD, port) = try FaultProxy.listenOnLoopback()
        let t = Thread { [self] in acceptLoop() }
        t.name = "reconnect-proxy"
        t.start()
    }

    var connections: Int { state.withLock { $0.connections } }
    var cuts: Int { state.withLock { $0.cuts } }

    /// Cuts every live connection both ways (a FIN each way, as a dead middlebox).
    func cut() {
        let fds = state.withLock { s -> [Int32] in
            s.cuts += 1
            defer { s.live = []; s.pairs = [:] }
            return s.live
        }
        for fd in fds { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }

    /// Cuts only connection `number` (1: the first accepted) both ways, if it is live.
    func cut(connection number: Int) {
        let fds = state.withLock { s -> [Int32] in
            guard let pair = s.pairs.removeValue(forKey: number) else { return [] }
            s.cuts += 1
            s.live.removeAll { pair.contains($0) }
            return pair
        }
        for fd in fds { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }

    /// Cuts once `rawBytes` more bytes went toward the receiver (inside the next TLS record).
    func cut(afterNextRawBytes rawBytes: Int) { state.withLock { $0.armedCut = rawBytes } }

    /// `hook(number)` runs on the accept thread for each new connection before it is
    /// forwarded to the target: a test may hold that connection there (the ones already
    /// forwarded go on) until an event it waits for.
    func onAccept(_ hook: @escaping @Sendable (Int) -> Void) { state.withLock { $0.acceptHook = hook } }

    /// While refusing, a new connection is closed at once (the link is still down).
    func setRefusing(_ refusing: Bool) { state.withLock { $0.refusing = refusing } }
    var isRefusing: Bool { state.withLock { $0.refusing } }

    func close() {
        let fds = state.withLock { s -> [Int32] in s.closed = true; return s.live }
        Glibc.shutdown(listenFD, Int32(SHUT_RDWR))
        for fd in fds { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }

    deinit {
        Glibc.close(listenFD)
        for fd in state.withLock({ $0.opened }) { Glibc.close(fd) }
    }

    private func acceptLoop() {
        while true {
            let client = accept(listenFD, nil, nil)
            if client < 0 { if errno == EINTR { continue }; return }
            let (refusing, closed, index, hook) = state.withLock { s in
                s.connections += 1
                return (s.refusing, s.closed, s.connections, s.acceptHook)
            }
            if closed { Glibc.close(client); return }
            hook?(index)
            if refusing { Glibc.shutdown(client, Int32(SHUT_RDWR)); Glibc.close(client); continue }
            let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = FaultProxy.loopback(port: targetPort)
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard rc == 0 else { Glibc.close(client); Glibc.close(server); continue }
            state.withLock { $0.live += [client, server]; $0.opened += [client, server]; $0.pairs[index] = [client, server] }
            for (from, to, up) in [(client, server, true), (server, client, false)] {
                let t = Thread { [self] in
                    pump(from: from, to: to, up: up, first: index == 1)
                    // The last pump of a pair closes both descriptors.
                    Glibc.shutdown(to, Int32(SHUT_WR))
                }
                t.name = up ? "reconnect-proxy-up" : "reconnect-proxy-down"
                t.start()
            }
        }
    }

    private func pump(from: Int32, to: Int32, up: Bool, first: Bool) {
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            var n = chunk.withUnsafeMutableBytes { recv(from, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }
            var cutAfter = false
            if up, first, let limit = cutFirstAfterRawBytes {
                let already = state.withLock { s -> Int in defer { s.upBytesFirst += n }; return s.upBytesFirst }
                if already >= limit { return }
                if already + n >= limit { n = limit - already; cutAfter = true }
            }
            if up, let left = state.withLock({ s -> Int? in
                guard let armed = s.armedCut else { return nil }
                s.armedCut = armed > n ? armed - n : nil
                return armed
            }), left <= n {
                n = left
                cutAfter = true
            }
            var off = 0
            while off < n {
                let sent = chunk.withUnsafeBytes { Glibc.send(to, $0.baseAddress! + off, n - off, Int32(MSG_NOSIGNAL)) }
                if sent <= 0 { if sent < 0 && errno == EINTR { continue }; return }
                off += sent
            }
            if cutAfter { cut(); return }
        }
    }
}
