import Foundation
import Glibc

/// A TCP proxy between a sender and a receiver with a fault plan.
///
/// It accepts one connection on 127.0.0.1:0, connects to the target and pumps both
/// directions on dedicated threads. It never decrypts: it reads the TLS record
/// headers (5 bytes, in clear) and so knows, for each record after the handshake,
/// which range of the *application plaintext* (the frame stream) it carries. TLS 1.3
/// application records carry `length - 17` plaintext bytes (inner content type + a
/// 16-byte AEAD tag). The handshake ends are found by causality: the client sends
/// its encrypted flight only after the server's flight passed, and the server sends
/// its first frame (HELLO) only after the client's flight passed.
///
/// Faults are placed by plaintext offsets (frame boundaries measured in a clean run,
/// see `FrameMap`) or by raw byte counts (inside the handshake), so they land in the
/// intended frame whatever the exact size of the handshake (ECDSA signatures vary).
final class FaultProxy: @unchecked Sendable {
    enum Direction: Sendable, CustomStringConvertible {
        /// sender → receiver (TLS client → server)
        case toReceiver
        /// receiver → sender
        case toSender
        var description: String { self == .toReceiver ? "sender→receiver" : "receiver→sender" }
    }

    enum Fault: Sendable, CustomStringConvertible {
        case none
        /// Forward exactly N raw bytes in that direction, then cut both ways.
        case cutAfterRawBytes(Direction, Int)
        /// Forward records until the plaintext up to `plain` has passed, then cut at once.
        case cutAfter(Direction, plain: Int)
        /// Forward everything before plaintext offset `plain`; when the record that starts
        /// there arrives, drop it and cut.
        case cutBefore(Direction, plain: Int)
        /// When the record carrying plaintext offset `plain` arrives, forward half of it and cut.
        case cutInside(Direction, plain: Int)
        /// Flip one ciphertext byte in the middle of the record carrying `plain`; keep going.
        case flipByte(Direction, plain: Int)
        /// When the record carrying `plain` arrives, stop forwarding in both directions
        /// (connections stay open, nothing passes: a black hole).
        case stall(Direction, plain: Int)

        var description: String {
            switch self {
            case .none: return "no fault"
            case let .cutAfterRawBytes(d, n): return "cut \(d) after \(n) raw bytes"
            case let .cutAfter(d, p): return "cut \(d) right after plaintext byte \(p)"
            case let .cutBefore(d, p): return "cut \(d) before plaintext byte \(p)"
            case let .cutInside(d, p): return "cut \(d) inside the record carrying plaintext byte \(p)"
            case let .flipByte(d, p): return "flip a byte \(d) in the record carrying plaintext byte \(p)"
            case let .stall(d, p): return "stall both ways at plaintext byte \(p) \(d)"
            }
        }
    }

    struct Record: Sendable {
        var type: UInt8
        var rawOffset: Int
        var length: Int          // with the 5-byte header
        /// Application plaintext range, nil for handshake records.
        var plain: Range<Int>?
    }

    let port: UInt16
    private let listenFD: Int32
    private let targetPort: UInt16
    private let fault: Fault
    private let cond = NSCondition()
    private var fds: [Int32] = []
    private var closed = false
    private var stalled = false
    private var cutDone = false
    private var _faultFired: String?
    private var forwardedRaw: [Bool: Int] = [true: 0, false: 0]
    private var forwardedPlain: [Bool: Int] = [true: 0, false: 0]
    private var records: [Bool: [Record]] = [true: [], false: []]
    private var encryptedSeen: [Bool: Bool] = [true: false, false: false]
    private var appStarted: [Bool: Bool] = [true: false, false: false]
    private var handshakeEnd: [Bool: Int] = [:]
    private var threadsLive = 0
    /// Delay per forwarded chunk toward the receiver (a slow network), seconds.
    private let throttle: Double

    init(targetPort: UInt16, fault: Fault = .none, throttleSecondsPerChunk: Double = 0) throws {
        self.targetPort = targetPort
        self.fault = fault
        self.throttle = throttleSecondsPerChunk
        (listenFD, port) = try Self.listenOnLoopback()
        let t = Thread { [self] in acceptAndPump() }
        t.name = "proxy-accept"
        t.start()
    }

    /// A listening TCP socket on 127.0.0.1 and its port (the kernel's choice).
    static func listenOnLoopback() throws -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ProxyError("socket: errno \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = FaultProxy.loopback(port: 0)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0, listen(fd, 8) == 0 else { Glibc.close(fd); throw ProxyError("bind/listen: errno \(errno)") }
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return (fd, UInt16(bigEndian: bound.sin_port))
    }

    static func loopback(port: UInt16) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        return a
    }

    /// What the fault did (nil if it never fired).
    var faultFired: String? { cond.lock(); defer { cond.unlock() }; return _faultFired }
    /// Records seen in a direction (for measuring a clean run).
    func recordLog(_ d: Direction) -> [Record] { cond.lock(); defer { cond.unlock() }; return records[d == .toReceiver]! }
    /// Raw bytes of the handshake in a direction, once known.
    func handshakeBytes(_ d: Direction) -> Int? { cond.lock(); defer { cond.unlock() }; return handshakeEnd[d == .toReceiver] }
    func forwardedRawBytes(_ d: Direction) -> Int { cond.lock(); defer { cond.unlock() }; return forwardedRaw[d == .toReceiver]! }

    /// Blocks until `plain` plaintext bytes have been forwarded in `d` (or the proxy ended).
    func waitForwarded(_ d: Direction, plain: Int, timeout: Double = 30) -> Bool {
        let deadline = Date(timeIntervalSinceNow: timeout)
        cond.lock(); defer { cond.unlock() }
        while forwardedPlain[d == .toReceiver]! < plain && !closed && !cutDone && !stalled {
            if !cond.wait(until: deadline) { return false }
        }
        return forwardedPlain[d == .toReceiver]! >= plain
    }

    func close() {
        cond.lock()
        closed = true
        let all = fds
        cond.broadcast()
        cond.unlock()
        Glibc.shutdown(listenFD, Int32(SHUT_RDWR))
        for fd in all { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
        cond.lock()
        while threadsLive > 0 { cond.wait() }
        cond.unlock()
        Glibc.close(listenFD)
        for fd in all { Glibc.close(fd) }
    }

    deinit { }

    private func acceptAndPump() {
        cond.lock(); threadsLive += 1; cond.unlock()
        defer { cond.lock(); threadsLive -= 1; cond.broadcast(); cond.unlock() }
        let client = accept(listenFD, nil, nil)
        guard client >= 0 else { return }
        let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = FaultProxy.loopback(port: targetPort)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        cond.lock()
        fds += [client, server]
        let isClosed = closed
        cond.unlock()
        guard rc == 0, !isClosed else { Glibc.shutdown(client, Int32(SHUT_RDWR)); return }
        for (from, to, up) in [(client, server, true), (server, client, false)] {
            cond.lock(); threadsLive += 1; cond.unlock()
            let t = Thread { [self] in
                pump(from: from, to: to, up: up)
                cond.lock(); threadsLive -= 1; cond.broadcast(); cond.unlock()
            }
            t.name = up ? "proxy-up" : "proxy-down"
            t.start()
        }
    }

    private func direction(_ up: Bool) -> Direction { up ? .toReceiver : .toSender }

    /// Cuts both connections (RST-free: a plain FIN both ways, like a dead middlebox closing).
    private func cutAll(_ why: String) {
        cond.lock()
        if _faultFired == nil { _faultFired = why }
        cutDone = true
        let all = fds
        cond.broadcast()
        cond.unlock()
        for fd in all { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }

    private func send(_ fd: Int32, _ bytes: ArraySlice<UInt8>, up: Bool) -> Bool {
        var off = bytes.startIndex
        while off < bytes.endIndex {
            let n = bytes.withUnsafeBytes { p in Glibc.send(fd, p.baseAddress! + (off - bytes.startIndex), bytes.endIndex - off, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { if n < 0 && errno == EINTR { continue }; return false }
            off += n
        }
        cond.lock(); forwardedRaw[up]! += bytes.count; cond.broadcast(); cond.unlock()
        return true
    }

    private func holdWhileStalled() {
        cond.lock()
        while stalled && !closed { cond.wait() }
        cond.unlock()
    }

    private func pump(from: Int32, to: Int32, up: Bool) {
        var buffer: [UInt8] = []
        var raw = 0               // raw bytes consumed into records so far
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        let rawCut: Int? = { if case let .cutAfterRawBytes(d, n) = fault, (d == .toReceiver) == up { return n } else { return nil } }()
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(from, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            cond.lock(); let isStalled = stalled; let isCut = cutDone; cond.unlock()
            if isCut { return }
            if isStalled { holdWhileStalled(); return }
            if n <= 0 {
                // Pass the end of stream on (half-close), like TCP would.
                Glibc.shutdown(to, Int32(SHUT_WR))
                return
            }
            if up && throttle > 0 { Thread.sleep(forTimeInterval: throttle) }
            if let rawCut {
                // Raw mode: no record parsing needed.
                let already = forwardedRawBytes(direction(up))
                let take = min(n, rawCut - already)
                if take > 0 { _ = send(to, chunk[0..<take], up: up) }
                if already + n >= rawCut { cutAll("cut \(direction(up)) after \(rawCut) raw bytes"); return }
                continue
            }
            buffer.append(contentsOf: chunk[0..<n])
            // Whole records only.
            while buffer.count >= 5 {
                let length = 5 + (Int(buffer[3]) << 8 | Int(buffer[4]))
                guard buffer.count >= length else { break }
                var record = Array(buffer[0..<length])
                buffer.removeFirst(length)
                let type = record[0]
                let plain = classify(type: type, length: length, rawOffset: raw, up: up)
                raw += length
                switch act(on: plain, up: up) {
                case .forward:
                    if !send(to, record[...], up: up) { return }
                case .flip:
                    record[5 + (length - 5) / 2] ^= 0x40
                    if !send(to, record[...], up: up) { return }
                case .forwardThenCut(let why):
                    _ = send(to, record[...], up: up)
                    cutAll(why); return
                case .cut(let why):
                    cutAll(why); return
                case .half(let why):
                    _ = send(to, record[0..<(5 + (length - 5) / 2)], up: up)
                    cutAll(why); return
                case .stall(let why):
                    cond.lock(); stalled = true; if _faultFired == nil { _faultFired = why }; cond.broadcast(); cond.unlock()
                    holdWhileStalled(); return
                }
                if let plain {
                    cond.lock(); forwardedPlain[up] = plain.upperBound; cond.broadcast(); cond.unlock()
                }
            }
        }
    }

    /// Notes the record and returns its application-plaintext range (nil in the handshake).
    private func classify(type: UInt8, length: Int, rawOffset: Int, up: Bool) -> Range<Int>? {
        cond.lock(); defer { cond.unlock() }
        var plain: Range<Int>?
        if type == 0x17 {
            if !encryptedSeen[up]! { encryptedSeen[up] = true }
            // Client records are application data once the server's first frame has passed;
            // server records once the client's encrypted flight has begun.
            let isApp = up ? appStarted[false]! : encryptedSeen[true]!
            if isApp {
                if !appStarted[up]! { appStarted[up] = true; handshakeEnd[up] = rawOffset }
                let start = records[up]!.last?.plain?.upperBound ?? 0
                plain = start..<(start + length - 5 - 17)
            }
        }
        records[up]!.append(Record(type: type, rawOffset: rawOffset, length: length, plain: plain))
        return plain
    }

    private enum Action { case forward, flip, forwardThenCut(String), cut(String), half(String), stall(String) }

    private func act(on plain: Range<Int>?, up: Bool) -> Action {
        guard let plain else { return .forward }
        let d = direction(up)
        func mine(_ x: Direction) -> Bool { x == d }
        cond.lock(); let fired = _faultFired != nil; cond.unlock()
        switch fault {
        case let .cutAfter(x, p) where mine(x) && plain.upperBound >= p:
            return .forwardThenCut("cut \(d) after the record ending at plaintext \(plain.upperBound) (raw \(rawAfter(up, plain)))")
        case let .cutBefore(x, p) where mine(x) && plain.lowerBound >= p:
            return .cut("cut \(d) before the record at plaintext \(plain.lowerBound)")
        case let .cutInside(x, p) where mine(x) && plain.contains(p):
            return .half("cut \(d) inside the record carrying plaintext \(plain) ")
        case let .flipByte(x, p) where mine(x) && plain.contains(p) && !fired:
            cond.lock(); _faultFired = "flipped a byte \(d) in the record carrying plaintext \(plain)"; cond.unlock()
            return .flip
        case let .stall(x, p) where mine(x) && plain.upperBound > p:
            return .stall("stalled \(d) at the record carrying plaintext \(plain)")
        default:
            return .forward
        }
    }

    private func rawAfter(_ up: Bool, _ plain: Range<Int>) -> Int {
        cond.lock(); defer { cond.unlock() }
        return records[up]!.last.map { $0.rawOffset + $0.length } ?? 0
    }
}

struct ProxyError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
